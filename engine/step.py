"""What the training loop hands to distillers, path methods and weightings, in a leaf module that imports no plugin and
not the training loop: the step's context, each path's route (teacher, teacher spot, student spot), the
tapped shapes, and the small protocols (``LearnerView``, ``Reporter``) plugins are typed against instead
of engine/train.py's classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Protocol

import torch
from torch import nn

from engine.telemetry import Recorded, Telemetry


class PathRoute(NamedTuple):
    """Where a path reads its two taps: ``teacher``'s ``teacher_spot`` and the student's ``student_spot``.

    A tuple, so ``tid, t_spot, s_spot = route`` still works where code unpacks it.
    """

    teacher: str
    teacher_spot: str
    student_spot: str


@dataclass
class StepContext:
    """What a loss term, a path method or a weighting may need beyond the two taps."""

    labels: torch.Tensor
    epoch: int
    step: int
    index: torch.Tensor  # stable sample ids of the batch
    x: torch.Tensor | None = None  # the (augmented) input batch
    student_taps: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_taps: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # teacher id -> spot -> tap
    telemetry: Telemetry = field(default_factory=Telemetry)
    # Closes a section of the step timer ("aggregator" once the weights and combination are done); a no-op
    # when nothing is timing the step.
    mark: Callable[[str], None] = lambda _section: None


@dataclass
class TappedShapes:
    """Shapes (without batch) of every tapped spot: what path methods and weightings size their parts by."""

    student: dict[str, tuple[int, ...]]
    teachers: dict[str, dict[str, tuple[int, ...]]]


class Reporter(Protocol):
    def log(self, phase: str, step: int, epoch: int, values: dict[str, float]) -> None: ...
    def log_array(self, phase: str, step: int, epoch: int, key: str, recorded: Recorded) -> None: ...
    def event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None: ...
    def progress(self, fraction: float, phase: str) -> None: ...
    def check_stop(self) -> None: ...
    def truncate(self, phase: str, epoch: int) -> None: ...
    def flush(self) -> None: ...


class LearnerView(Protocol):
    """What path methods, weightings and the negative-transfer probe read of the learner (engine.train.Learner is one)."""

    #: the tapped student (engine.models.spots.TappedModel): ``student(x)`` -> {spot: tap}; ``.model``, ``.arch``
    student: Any
    distillers: nn.ModuleDict  # path id -> distiller
    path_spots: dict[str, PathRoute]  # path id -> its route
    teachers: dict[str, Any]  # teacher id -> frozen tapped teacher: ``teacher(x)`` -> {spot: tap}; ``.model``
    shapes: TappedShapes

    def path_loss(self, pid: str, student_taps: dict[str, torch.Tensor],
                  teacher_taps: dict[str, dict[str, torch.Tensor]], ctx: StepContext) -> torch.Tensor: ...

    def path_sample_losses(self, pid: str, student_taps: dict[str, torch.Tensor],
                           teacher_taps: dict[str, dict[str, torch.Tensor]], ctx: StepContext) -> torch.Tensor: ...
