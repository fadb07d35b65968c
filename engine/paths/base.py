"""What every distiller shares.

A distiller compares one student tap with one teacher tap and returns a scalar loss.
Learnable parts (regressors, embedding heads) are built in ``__init__`` from the tapped
shapes, so they exist before the optimizer is created, train with the student and are
saved in its checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from engine.params import NoParams, Params, parse_params
from engine.step import StepContext  # noqa: F401  (distillers import it from here)

SpotKind = str  # "feature_map" | "embedding" | "logits"
Shape = Any  # tuple[int, ...], or a tuple of two shapes when spots_per_side is 2


SPOT_JOIN = "+"


def split_spot(spot: str) -> list[str]:
    """'layer1+layer2' -> ['layer1', 'layer2']: distillers over stage pairs read two spots per side."""
    return spot.split(SPOT_JOIN)


@dataclass(frozen=True)
class DataInfo:
    """Facts about the data a distiller may size its parts by (CRD's memory bank)."""

    num_classes: int
    num_samples: int  # every sample id is below this


class Distiller(nn.Module):
    #: spot kinds this distiller accepts on both sides
    accepts: ClassVar[tuple[SpotKind, ...]] = ()
    #: the conventional loss weight (used when a path gives none)
    default_weight: ClassVar[float] = 1.0
    #: spots read on each side; 2 means a spot string "a+b" and taps given as a tuple (a, b)
    spots_per_side: ClassVar[int] = 1
    #: the parameters a path's ``params`` may set (defaults, bounds, descriptions); see engine.params
    params_model: ClassVar[type[Params]] = NoParams
    #: whether ``sample_losses`` gives the loss per sample (per-sample weightings need it)
    has_sample_losses: ClassVar[bool] = False

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info: DataInfo | None = None,
                 **params: Any) -> None:
        """Shapes exclude the batch; with spots_per_side 2 each is a tuple of two shapes. ``params`` are
        validated by ``params_model`` (engine.params.ParamsError, a ValueError, names each bad field) and
        kept as ``self.params``. Incompatible shapes raise ValueError with ``shape_problem``'s message
        (the one spec validation reports), here rather than inside torch on the first step."""
        super().__init__()
        self.params = parse_params(type(self).params_model, params)
        problem = type(self).shape_problem(student_shape, teacher_shape)
        if problem:
            raise ValueError(problem)
        self.student_shape = student_shape
        self.teacher_shape = teacher_shape
        self.info = info

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        """Why these two taps cannot be compared, or None. Default: shapes must be equal."""
        if tuple(student_shape) != tuple(teacher_shape):
            return (f"needs equal shapes but student tap is {tuple(student_shape)} and "
                    f"teacher tap is {tuple(teacher_shape)}")
        return None

    def conventional_weight(self) -> float:
        """The loss weight a path that sets none gets: ``default_weight``, unless a parameter changes the
        convention (cc's ``form``)."""
        return type(self).default_weight

    def forward(self, student: Any, teacher: Any, ctx: StepContext) -> torch.Tensor:
        """A scalar loss; taps are tensors, or (first, second) tuples when spots_per_side is 2."""
        raise NotImplementedError

    def sample_losses(self, student: Any, teacher: Any, ctx: StepContext) -> torch.Tensor:
        """The loss per sample, shape (B,), such that ``sample_losses(...).mean()`` equals ``forward(...)``
        to float precision (so a per-sample weighting with equal weights reproduces the plain path).
        Only distillers whose loss decomposes over samples give it (``has_sample_losses`` True);
        relational ones (a loss over pairs or sets of samples) cannot."""
        raise TypeError(f"{type(self).__name__} gives no per-sample loss")
