"""Chennupati, Kamani, Cheng & Chen, BMVC 2021: Adaptive Distillation (each path is a task)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import nn
from pydantic import Field

from engine.params import Params
from engine.aggregators.registry import AGGREGATORS
from engine.aggregators.base import TASK, Aggregator, path_key
from engine.paths import DISTILLERS

if TYPE_CHECKING:
    from engine.step import LearnerView as Learner


def distiller_name(distiller: nn.Module) -> str:
    """The registry name of a distiller instance (its class name if it was never registered)."""
    for entry in DISTILLERS:
        if type(distiller) is entry.obj:
            return entry.name
    return type(distiller).__name__


class AdaptiveDistillationParams(Params):
    a_d: float = Field(1.0, gt=0, description="scale a_d of the weighted path losses and of the regulariser")
    use_path_weights: bool = Field(False, description="lambda_k: each path's configured weight instead of 1")
    variant: Literal["layer_wise", "per_loss"] = Field(
        "layer_wise", description="one learnt s per path (layer_wise) or per distiller type (per_loss)")


@AGGREGATORS.register("adaptive_distillation",
                      "Adaptive Distillation: CE + a_d sum exp(-s_k) lambda_k L_k + a_d sum s_k, s learnt")
class AdaptiveDistillation(Aggregator):
    """L = CE + a_d sum_k exp(-s_g(k)) lambda_k L_k + a_d sum_g s_g   (a_d = 1, lambda_k = 1, s init 0).

    variant "layer_wise": one s per path (g(k) = k). variant "per_loss": one s per distiller type,
    shared by that type's paths; the group's s enters the regulariser once, so its paths act as one
    task whose loss is the sum of theirs (the paper's "feature losses summed over stages").
    lambda_k is 1, or the path's configured weight when use_path_weights is set.
    s trains with the student's optimizer (without weight decay). At the stationary point
    exp(-s_g) = 1 / sum_{k in g} lambda_k L_k; the reported weight is w_k = exp(-s_g(k)).
    """

    params_model = AdaptiveDistillationParams

    def __init__(self, path_ids, path_weights, **params) -> None:
        super().__init__(path_ids, path_weights, **params)
        self.a_d = float(self.params.a_d)
        self.variant = variant = self.params.variant
        use_path_weights = self.params.use_path_weights
        lambdas = [self.path_weights[pid] if use_path_weights else 1.0 for pid in self.path_ids]
        self.register_buffer("lambdas", torch.tensor(lambdas, dtype=torch.float32), persistent=False)
        self._rebuild(list(self.path_ids))  # per_loss regroups in attach, once the distillers are known

    def _rebuild(self, groups: list[str]) -> None:
        """One log-variance per distinct group name; groups[k] is path k's group."""
        names = list(dict.fromkeys(groups))
        self.group_names = names
        self.log_vars = nn.Parameter(torch.zeros(len(names)))
        self.register_buffer("group_of_path", torch.tensor([names.index(g) for g in groups], dtype=torch.long),
                             persistent=False)

    def attach(self, learner: "Learner") -> None:
        if self.variant == "per_loss":
            self._rebuild([distiller_name(learner.distillers[pid]) for pid in self.path_ids])

    def weights(self, losses, ctx) -> dict[str, torch.Tensor]:
        w = torch.exp(-self.log_vars.detach())[self.group_of_path]
        return dict(zip(self.path_ids, w.unbind()))

    def combine(self, losses, ctx) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = losses[TASK]
        if self.path_ids:
            path = torch.stack([losses[path_key(pid)] for pid in self.path_ids])
            scaled = torch.exp(-self.log_vars)[self.group_of_path] * self.lambdas * path
            total = total + self.a_d * (scaled.sum() + self.log_vars.sum())
        return total, self.weights(losses, ctx)
