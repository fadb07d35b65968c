"""The named terms a step trains, and the parts that learn with optimizers of their own.

Every tensor that reaches the student's backward is a *term* with a name and a weight, so the logged
terms add up to the logged total (``loss/total = sum_k weight/<k> * loss/<k>``) and the Live page can
draw each one:

    task                  the task cross-entropy (weight: the method's task weight; never re-weighted)
    path:<id>             a path's distiller, as the path method computes it
    <method>/<term>       a path method's own terms, e.g. ``amtml/fused_kd``, ``amtml/hint:<path>``, ``amtml/reg``
    <weighting>/<term>    a weighting's own terms, e.g. ``uncertainty/reg``

A path method says which terms it returns (``TermInfo``) once it is attached; the weighting then weighs
the *weighable* ones (distillation terms) and leaves the others (task, regularisers) at their base weight.
Neutral module: torch only, no plugin and not the training loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.vocabulary import TASK


@dataclass(frozen=True)
class TermInfo:
    """What a term is, known before training: its name, base weight and what may change that weight."""

    name: str
    weight: float = 1.0  # its base weight: the path's configured weight, a method's hint weight, 1 for a regulariser
    weighable: bool = True  # a weighting sets its weight; False: the weight stays ``weight`` (task, regularisers)
    path: str | None = None  # the one path it distils (per-path charts, the probe); None: several paths or none
    kind: str = ""  # what computes it (a distiller's name, "amtml/hint"): adaptive_distillation groups by it


def task_term(weight: float) -> TermInfo:
    return TermInfo(TASK, weight, weighable=False, kind=TASK)


class OwnLearner(nn.Module):
    """A part that trains on an optimizer of its own (GradNorm's weights, SAKD's agent).

    The training loop calls ``step(values, ctx)`` once per step, after the step's weights are known and
    before the student's backward; its parameters are kept out of the student's optimizer. The optimizer's
    state travels in checkpoints through ``get_extra_state``.
    """

    #: shown in events and errors, e.g. "sakd/agent"
    name: str = "learner"
    optimizer: torch.optim.Optimizer | None = None

    def step(self, values: dict[str, torch.Tensor], ctx: Any) -> None:
        raise NotImplementedError

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("optimizer") is not None and self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
