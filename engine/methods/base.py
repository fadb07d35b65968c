"""What every path method shares, and the plain method a run without one uses.

A path method decides what the paths compute: by default each path's distiller on the whole batch, one
term ``path:<id>`` each. A registered method (AMTML, SAKD, DFA) changes that (fusing teachers, masking
samples, mixing teacher maps) and returns every term it wants trained, by name. Hooks, in run order:

    wanted_spots(...)     extra spots to tap (AMTML reads every teacher's logits)
    attach(learner)       build parts sized by the tapped shapes (before the optimizer exists)
    term_infos(learner)   the terms it returns, fixed for the run (names, base weights, paths)
    prepare(...)          work before training (DFA's search)
    terms(learner, ctx)   this step's values, one per term_infos() name except the task
    learners()            parts with optimizers of their own, stepped by the loop (SAKD's agent)
    on_epoch_end(epoch)   epoch-level state (AMTML's stage switch)

Parameters outside ``learners()`` train with the student's optimizer, without weight decay.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from engine.params import NoParams, Params, parse_params
from engine.step import PathRoute, StepContext
from engine.terms import OwnLearner, TermInfo
from engine.vocabulary import TelemetryPanel, path_key

if TYPE_CHECKING:
    from engine.data.bundle import DataBundle
    from engine.step import LearnerView as Learner, Reporter


class PathMethod(nn.Module):
    #: True when the method needs the teachers' live forward every step (no cached taps)
    needs_live_teachers: bool = False
    #: the arrays it records and how Teacher importance draws them (None: records none)
    telemetry: TelemetryPanel | None = None
    #: the parameters ``method.params`` may set; see engine.params
    params_model: type[Params] = NoParams
    #: the base weight of the task cross-entropy (AMTML: 1 - alpha)
    task_weight: float = 1.0
    #: the name terms and messages use ("paths" for the plain method)
    name: str = "paths"

    def __init__(self, path_ids: list[str], path_weights: dict[str, float], distiller_names: dict[str, str],
                 **params: Any) -> None:
        """path_weights: each path's configured weight (the spec's, or its distiller's conventional one);
        distiller_names: each path's distiller, by registry name."""
        super().__init__()
        self.params = parse_params(type(self).params_model, params)
        self.path_ids = list(path_ids)
        self.path_weights = dict(path_weights)
        self.distiller_names = dict(distiller_names)

    # ------------------------------------------------------------ set-up
    def wanted_spots(self, teacher_ids: list[str], path_spots: dict[str, PathRoute]
                     ) -> tuple[set[str], dict[str, set[str]]]:
        """Spots to tap beyond the paths' own: (student spots, {teacher id: spots})."""
        return set(), {}

    def attach(self, learner: "Learner") -> None:
        """Build parts from the learner's tapped shapes; called once, before the optimizer is made."""

    def term_infos(self, learner: "Learner") -> list[TermInfo]:
        """The terms terms() returns (the task term is the loop's); by default one per path."""
        return [self.path_term(pid) for pid in self.path_ids]

    def path_term(self, pid: str, weight: float | None = None) -> TermInfo:
        """Path ``pid``'s own term, at its configured weight unless ``weight`` is given."""
        return TermInfo(path_key(pid), self.path_weights[pid] if weight is None else weight, path=pid,
                        kind=self.distiller_names.get(pid, ""))

    def prepare(self, learner: "Learner", bundle: "DataBundle", device: torch.device, reporter: "Reporter") -> None:
        """Work to do before training starts (and again on resume, so it must be deterministic)."""

    def learners(self) -> list[OwnLearner]:
        return []

    # ------------------------------------------------------------ step
    def terms(self, learner: "Learner", ctx: StepContext) -> dict[str, torch.Tensor]:
        """One value per term_infos() name; by default each path's distiller on the whole batch."""
        return {path_key(pid): learner.path_loss(pid, ctx.student_taps, ctx.teacher_taps, ctx)
                for pid in self.path_ids}

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch of the main phase."""
