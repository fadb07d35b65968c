"""Chen, Badrinarayanan, Lee & Rabinovich 2018: GradNorm over the path losses."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn
from pydantic import Field

from engine.params import Params
from engine.aggregators.registry import AGGREGATORS
from engine.aggregators.base import Aggregator, path_key

if TYPE_CHECKING:
    from engine.step import LearnerView as Learner

#: a weight never drops below this before renormalising: a negative weight would ascend its path's loss
MIN_WEIGHT = 1e-3


def last_shared_parameter(losses: list[torch.Tensor], params: list[nn.Parameter]) -> nn.Parameter:
    """The last of `params` (in their order) that every loss depends on, found by autograd."""
    reached = [True] * len(params)
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        reached = [r and g is not None for r, g in zip(reached, grads)]
    if not any(reached):
        raise ValueError("gradnorm: the path losses share no student parameter")
    return params[max(i for i, r in enumerate(reached) if r)]


class GradNormParams(Params):
    alpha: float = Field(1.5, ge=0, description="asymmetry: how hard slow-training paths are pushed (0: equal norms)")
    lr: float = Field(0.025, gt=0, description="learning rate of the weights' own Adam optimizer")


@AGGREGATORS.register("gradnorm", "GradNorm: learn path weights so their gradient norms train at equal rates")
class GradNorm(Aggregator):
    """L = CE + sum_k w_k L_k with w (init 1) trained by its own Adam on

        L_grad = sum_k | G_k - sg(mean_j G_j * r_k^alpha) |,  G_k = ||grad_W (w_k L_k)||,
        r_k = (L_k(t) / L_k(0)) / mean_j (L_j(t) / L_j(0)),

    then renormalised so sum_k w_k = K. W is the last shared layer: the last student parameter tensor
    (in model order) that every path loss depends on, found by autograd on the first step. L_k(0) is
    each path's loss on the run's first step. The student sees the weights as constants.
    Deviations: weights are floored at 1e-3 before renormalising (a negative weight would maximise its
    path's loss); the task CE is not a GradNorm task (weight 1); path_weights are ignored (w starts at 1).
    The reported weight is w_k used in the step. Telemetry: "gradnorm/grad_norms", G_k of the step as one row
    that belongs to no sample (index -1, columns: path ids).
    """

    params_model = GradNormParams

    def __init__(self, path_ids, path_weights, **params) -> None:
        super().__init__(path_ids, path_weights, **params)
        self.alpha, lr = float(self.params.alpha), self.params.lr
        self.weight = nn.Parameter(torch.ones(len(self.path_ids)))
        self.register_buffer("initial_losses", torch.ones(len(self.path_ids)))
        self.register_buffer("has_initial", torch.zeros((), dtype=torch.bool))
        self.optimizer = torch.optim.Adam([self.weight], lr=float(lr))
        self._student: list[nn.Parameter] = []  # plain list: the student's weights are not the aggregator's
        self._shared_layer: list[nn.Parameter] = []  # W, once found (a list, so it is not registered here)
        self.last_grad_norms = torch.zeros(len(self.path_ids))  # G_k of the last step, for inspection

    def attach(self, learner: "Learner") -> None:
        self._student = [p for p in learner.student.parameters() if p.requires_grad]

    def student_optimized_parameters(self) -> Iterator[nn.Parameter]:
        return iter(())  # w trains with its own optimizer on L_grad, not on the student's loss

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def weights(self, losses, ctx) -> dict[str, torch.Tensor]:
        return dict(zip(self.path_ids, self.weight.detach().clone().unbind()))

    def backward(self, losses, ctx) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.path_ids:
            return super().backward(losses, ctx)
        path = [losses[path_key(pid)] for pid in self.path_ids]
        if not self._shared_layer:
            self._shared_layer = [last_shared_parameter(path, self._student)]
        # ||grad_W (w_k L_k)|| = w_k ||grad_W L_k||: only w needs a graph, not the network
        raw_norms = torch.stack([torch.autograd.grad(loss, self._shared_layer, retain_graph=True)[0].norm()
                                 for loss in path])
        total, weights = super().backward(losses, ctx)
        self._update_weights(raw_norms, torch.stack(path).detach())
        ctx.telemetry.record("gradnorm/grad_norms", self.last_grad_norms[None], torch.tensor([-1]),
                             columns=self.path_ids)
        return total, weights

    def _update_weights(self, raw_norms: torch.Tensor, path_losses: torch.Tensor) -> None:
        if not bool(self.has_initial):
            self.initial_losses.copy_(path_losses)
            self.has_initial.fill_(True)
        grad_norms = self.weight * raw_norms
        ratio = path_losses / self.initial_losses.clamp_min(1e-12)
        relative = ratio / ratio.mean().clamp_min(1e-12)
        target = (grad_norms.mean() * relative**self.alpha).detach()
        self.optimizer.zero_grad(set_to_none=True)
        (grad_norms - target).abs().sum().backward(inputs=[self.weight])
        self.optimizer.step()
        with torch.no_grad():
            self.weight.clamp_(min=MIN_WEIGHT)
            self.weight.mul_(len(self.path_ids) / self.weight.sum())
        self.last_grad_norms = grad_norms.detach()
