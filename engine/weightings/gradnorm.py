"""Chen, Badrinarayanan, Lee & Rabinovich 2018: GradNorm over the distillation terms."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from pydantic import Field

from engine.params import Params
from engine.step import StepContext
from engine.terms import OwnLearner, TermInfo
from engine.weightings.base import Weighting
from engine.weightings.registry import WEIGHTINGS

if TYPE_CHECKING:
    from engine.step import LearnerView as Learner

#: a weight never drops below this before renormalising: a negative weight would ascend its term's loss
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


class GradNormWeights(OwnLearner):
    """The learnt weights w (init 1) and their Adam, stepped on L_grad once per step (see GradNorm)."""

    name = "gradnorm/weights"

    def __init__(self, names: list[str], alpha: float, lr: float) -> None:
        super().__init__()
        self.names, self.alpha = list(names), alpha
        self.weight = nn.Parameter(torch.ones(len(names)))
        self.register_buffer("initial_losses", torch.ones(len(names)))
        self.register_buffer("has_initial", torch.zeros((), dtype=torch.bool))
        self.optimizer = torch.optim.Adam([self.weight], lr=lr)
        self.student: list[nn.Parameter] = []  # plain lists: the student's weights are not this part's
        self.shared_layer: list[nn.Parameter] = []  # W, once found
        self.last_grad_norms = torch.zeros(len(names))  # G_k of the last step, for inspection

    def step(self, values: dict[str, torch.Tensor], ctx: StepContext) -> None:
        losses = [values[name] for name in self.names]
        if not self.shared_layer:
            self.shared_layer = [last_shared_parameter(losses, self.student)]
        # ||grad_W (w_k L_k)|| = w_k ||grad_W L_k||: only w needs a graph, not the network
        raw_norms = torch.stack([torch.autograd.grad(loss, self.shared_layer, retain_graph=True)[0].norm()
                                 for loss in losses])
        self._update(raw_norms, torch.stack(losses).detach().float())
        ctx.telemetry.record("gradnorm/grad_norms", self.last_grad_norms[None], torch.tensor([-1]),
                             columns=self.names)

    def _update(self, raw_norms: torch.Tensor, losses: torch.Tensor) -> None:
        if not bool(self.has_initial):
            self.initial_losses.copy_(losses)
            self.has_initial.fill_(True)
        grad_norms = self.weight * raw_norms
        ratio = losses / self.initial_losses.clamp_min(1e-12)
        relative = ratio / ratio.mean().clamp_min(1e-12)
        target = (grad_norms.mean() * relative**self.alpha).detach()
        self.optimizer.zero_grad(set_to_none=True)
        (grad_norms - target).abs().sum().backward(inputs=[self.weight])
        self.optimizer.step()
        with torch.no_grad():
            self.weight.clamp_(min=MIN_WEIGHT)
            self.weight.mul_(len(self.names) / self.weight.sum())
        self.last_grad_norms = grad_norms.detach()


@WEIGHTINGS.register("gradnorm", "GradNorm: learn path weights so their gradient norms train at equal rates")
class GradNorm(Weighting):
    """L = CE + sum_k w_k L_k with w (init 1) trained by its own Adam on

        L_grad = sum_k | G_k - sg(mean_j G_j * r_k^alpha) |,  G_k = ||grad_W (w_k L_k)||,
        r_k = (L_k(t) / L_k(0)) / mean_j (L_j(t) / L_j(0)),

    then renormalised so sum_k w_k = K. W is the last shared layer: the last student parameter tensor
    (in model order) that every term depends on, found by autograd on the first step. L_k(0) is
    each term's value on the run's first step. The student sees the weights as constants: w and its
    Adam are the own learner ``gradnorm/weights``, stepped after the step's weights are taken, so a
    step uses the weights from before its update.
    Deviations: weights are floored at 1e-3 before renormalising (a negative weight would maximise its
    term's loss); the task CE is not a GradNorm task (weight 1); base weights are ignored (w starts at 1).
    Telemetry: "gradnorm/grad_norms", G_k of the step as one row that belongs to no sample (index -1,
    columns: term names).
    """

    params_model = GradNormParams

    def __init__(self, terms: list[TermInfo], **params) -> None:
        super().__init__(terms, **params)
        self.part = GradNormWeights(self.names, float(self.params.alpha), float(self.params.lr))

    def attach(self, learner: "Learner") -> None:
        self.part.student = [p for p in learner.student.parameters() if p.requires_grad]

    def learners(self) -> list[OwnLearner]:
        return [self.part]

    def weigh(self, values, ctx, grads) -> torch.Tensor:
        return self.part.weight.detach().clone()
