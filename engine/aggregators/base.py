"""What every aggregator shares.

An aggregator turns the step's named losses ("task" and one "path:<id>" per path) into
the update. Hooks, in the order a run calls them (each has a do-nothing default):

    wanted_spots(...)     extra spots to tap (AMTML reads every teacher's logits)
    attach(learner)       build learnable parts sized by the tapped shapes (before the optimizer exists)
    prepare(...)          work before training (DFA's search)
    path_losses(...)      the path losses of a step (SAKD masks samples, DFA mixes teacher maps)
    backward(losses, ctx) the update: weighted sum + backward by default; PCGrad/MGDA edit gradients
    on_epoch_end(epoch)   epoch-level state (DWA's loss ratios, AMTML's stage switch)
    on_probe(probe)       after a negative-transfer probe (the lookahead aggregator weighs paths by it)

Learnable state lives in the module (parameters, buffers, and get_extra_state for an own
optimizer), so checkpoints carry it. Parameters returned by ``student_optimized_parameters``
are trained by the student's optimizer (without weight decay); others train themselves.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn

from engine.params import NoParams, Params, parse_params
from engine.step import PathRoute, StepContext
from engine.vocabulary import TASK, TelemetryPanel, path_key  # noqa: F401  (aggregators import them from here)

if TYPE_CHECKING:  # only for type hints: train.py imports this module
    from engine.data.bundle import DataBundle
    from engine.diagnostics.probe import GradientProbe
    from engine.step import LearnerView as Learner, Reporter


class Aggregator(nn.Module):
    #: True when the aggregator needs the teachers' live forward every step (no cached taps)
    needs_live_teachers: bool = False
    #: True when the aggregator is driven by the negative-transfer probe (diagnostics must be on)
    needs_probe: bool = False
    #: the per-sample arrays it records and how the Teacher importance page draws them (None: records none)
    telemetry: TelemetryPanel | None = None
    #: the parameters ``aggregator.params`` may set (defaults, bounds, descriptions); see engine.params
    params_model: type[Params] = NoParams

    def __init__(self, path_ids: list[str], path_weights: dict[str, float], **params: Any) -> None:
        """path_weights: each path's configured weight (the spec's, or its distiller's conventional one).
        ``params`` are validated by ``params_model`` and kept as ``self.params``."""
        super().__init__()
        self.params = parse_params(type(self).params_model, params)
        self.path_ids = list(path_ids)
        self.path_weights = dict(path_weights)
        self.task_weight = 1.0  # the task CE keeps weight 1 unless an aggregator says otherwise

    # ------------------------------------------------------------ set-up hooks
    def wanted_spots(self, teacher_ids: list[str], path_spots: dict[str, PathRoute]
                     ) -> tuple[set[str], dict[str, set[str]]]:
        """Spots to tap beyond the paths' own: (student spots, {teacher id: spots})."""
        return set(), {}

    def attach(self, learner: "Learner") -> None:
        """Build parts from the learner's tapped shapes; called once, before the optimizer is made."""

    def prepare(self, learner: "Learner", bundle: "DataBundle", device: torch.device, reporter: "Reporter") -> None:
        """Work to do before training starts (and again on resume, so it must be deterministic)."""

    def student_optimized_parameters(self) -> Iterator[nn.Parameter]:
        return self.parameters()

    # ------------------------------------------------------------ step hooks
    def path_losses(self, learner: "Learner", ctx: StepContext) -> dict[str, torch.Tensor]:
        """One loss per path, keyed "path:<id>"; by default each distiller on the whole batch."""
        return {path_key(pid): learner.path_loss(pid, ctx.student_taps, ctx.teacher_taps, ctx)
                for pid in self.path_ids}

    def weights(self, losses: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        """The weight of each path loss for this step (keys are path ids)."""
        raise NotImplementedError

    def combine(self, losses: dict[str, torch.Tensor], ctx: StepContext
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weights = self.weights(losses, ctx)
        total = self.task_weight * losses[TASK]
        for pid in self.path_ids:
            total = total + weights[pid] * losses[path_key(pid)]
        return total, weights

    def backward(self, losses: dict[str, torch.Tensor], ctx: StepContext
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Backpropagate the step's update; return (total loss, per-path weights) for logging."""
        total, weights = self.combine(losses, ctx)
        ctx.mark("aggregator")  # the rest, until the optimizer has stepped, is the backward pass
        total.backward()
        return total, weights

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch of the main phase."""

    def on_probe(self, probe: "GradientProbe") -> None:
        """Called after each negative-transfer probe (probe.latest holds its per-path measurements)."""
