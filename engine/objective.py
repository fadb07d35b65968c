"""From a step's named terms to the student's update: the one place where weights meet terms.

    total = sum over fixed terms (task, regularisers) of base weight x value
          + sum_k w_k x value_k          (the weighable terms, w from the weighting)
          + the weighting's own terms    (weight 1, e.g. uncertainty/reg)

The loop logs every term's value and weight, so the logged terms add up to the logged total. When the
weighting asks (``needs_gradients``), the (K, P) matrix of the weighable terms' gradients on the student's
parameters is built here, once, and handed to it; PCGrad's edited gradient replaces sum_k w_k g_k after
the one backward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from engine.distributed.reducer import Reducer
from engine.gradients import flat_grads
from engine.methods.base import PathMethod
from engine.step import StepContext
from engine.terms import OwnLearner, TermInfo, task_term
from engine.vocabulary import TASK
from engine.weightings.base import Weighting

if TYPE_CHECKING:
    from engine.step import LearnerView as Learner


@dataclass
class StepResult:
    total: torch.Tensor  # detached
    values: dict[str, torch.Tensor]  # every term of the step, the weighting's own included
    weights: dict[str, torch.Tensor | float]  # every term's weight in this step: detached, or a fixed float


class Objective:
    """The terms a run trains, fixed once the method is attached, and how one step combines them."""

    def __init__(self, method: PathMethod, method_terms: list[TermInfo], weighting: Weighting) -> None:
        self.method, self.weighting = method, weighting
        task = task_term(method.task_weight * weighting.task_weight)
        self.infos: dict[str, TermInfo] = {t.name: t for t in [task, *method_terms, *weighting.own_terms()]}
        self.weighable = [t.name for t in method_terms if t.weighable]
        self.fixed = [(t.name, t.weight) for t in [task, *method_terms] if not t.weighable]
        self.learners: list[OwnLearner] = [*method.learners(), *weighting.learners()]
        self._shared: list[torch.nn.Parameter] = []

    def attach(self, learner: "Learner") -> None:
        self._shared = [p for p in learner.student.parameters() if p.requires_grad]

    def path_term(self, path_id: str) -> str | None:
        """The name of the term that is path ``path_id``'s own, if it has one."""
        return next((t.name for t in self.infos.values() if t.path == path_id), None)

    # ------------------------------------------------------------ one step
    def backward(self, values: dict[str, torch.Tensor], ctx: StepContext, reducer: Reducer | None = None
                 ) -> StepResult:
        """Weigh, step the own learners, backpropagate the total; returns what the loop logs.

        reducer: over several processes, averages the gradient matrix (each process's rows are its share of the
        global batch's gradients); None or the default: one process."""
        stacked = torch.stack([values[n].float() for n in self.weighable]) if self.weighable else None
        wants_grads = self.weighting.needs_gradients and stacked is not None
        grads = self._gradient_matrix(values, reducer or Reducer()) if wants_grads else None
        weights = self.weighting.weigh(stacked, ctx, grads) if stacked is not None else None
        own = self.weighting.own_values(stacked, ctx) if stacked is not None else {}
        for learner in self.learners:
            learner.step(values, ctx)
        total = sum(weight * values[name] for name, weight in self.fixed)
        if stacked is not None:
            total = total + (weights * stacked).sum()
        for value in own.values():
            total = total + value
        ctx.mark("aggregator")  # the rest, until the optimizer has stepped, is the backward pass
        total.backward()
        if grads is not None:
            self._apply_edit(grads, weights.detach(), ctx)
        if stacked is not None:
            self.weighting.observe(stacked.detach())
        return StepResult(total.detach(), {**values, **own}, self._weights_of_terms(weights, own))

    def _gradient_matrix(self, values: dict[str, torch.Tensor], reducer: Reducer) -> torch.Tensor:
        # autograd.grad, not backward: DDP's gradient hooks do not fire, so the rows are this process's own and
        # are averaged here once, as a whole matrix
        return reducer.mean(torch.stack([flat_grads(values[n], self._shared) for n in self.weighable]))

    def _apply_edit(self, grads: torch.Tensor, weights: torch.Tensor, ctx: StepContext) -> None:
        """Replace sum_k w_k g_k in the shared parameters' gradient by the weighting's edited one."""
        edited = self.weighting.edit_gradient(grads, weights, ctx)
        if edited is None:
            return
        correction = edited - weights.to(grads.dtype) @ grads
        offset = 0
        for param in self._shared:
            size = param.numel()
            piece = correction[offset:offset + size].view_as(param)
            param.grad = piece.clone() if param.grad is None else param.grad + piece
            offset += size

    def _weights_of_terms(self, weights: torch.Tensor | None, own: dict[str, torch.Tensor]
                          ) -> dict[str, torch.Tensor | float]:
        out: dict[str, torch.Tensor | float] = {name: float(weight) for name, weight in self.fixed}
        if weights is not None:
            out.update(zip(self.weighable, weights.detach().unbind()))
        out.update({name: 1.0 for name in own})
        return out

    # ------------------------------------------------------------ what the probe measures
    def path_losses(self, learner: "Learner", values: dict[str, torch.Tensor], ctx: StepContext
                    ) -> dict[str, torch.Tensor]:
        """Each path's own loss: its term, or (a path a method folds into a shared term) its plain distiller."""
        out = {}
        for pid in learner.path_spots:
            name = self.path_term(pid)
            out[pid] = values[name] if name is not None else learner.path_loss(pid, ctx.student_taps,
                                                                              ctx.teacher_taps, ctx)
        return out

    def path_weights(self, path_ids: list[str], weights: dict[str, torch.Tensor | float]) -> dict[str, float]:
        """The weight of the task and of each path in the last step (its configured weight before any step); 1 for
        a path a method folds into a shared term."""
        def weight_of(term: str) -> float:
            return float(weights[term]) if term in weights else float(self.infos[term].weight)

        out = {TASK: weight_of(TASK)}
        for pid in path_ids:
            term = self.path_term(pid)
            out[pid] = weight_of(term) if term is not None else 1.0
        return out
