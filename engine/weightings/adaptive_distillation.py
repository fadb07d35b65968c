"""Chennupati, Kamani, Cheng & Chen, BMVC 2021: Adaptive Distillation (each distillation term is a task)."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from pydantic import Field

from engine.params import Params
from engine.terms import TermInfo
from engine.weightings.base import Weighting
from engine.weightings.registry import WEIGHTINGS

REG = "adaptive_distillation/reg"


class AdaptiveDistillationParams(Params):
    a_d: float = Field(1.0, gt=0, description="scale a_d of the weighted path losses and of the regulariser")
    use_path_weights: bool = Field(False, description="lambda_k: each path's configured weight instead of 1")
    variant: Literal["layer_wise", "per_loss"] = Field(
        "layer_wise", description="one learnt s per path (layer_wise) or per distiller type (per_loss)")


@WEIGHTINGS.register("adaptive_distillation",
                     "Adaptive Distillation: CE + a_d sum exp(-s_k) lambda_k L_k + a_d sum s_k, s learnt")
class AdaptiveDistillation(Weighting):
    """L = CE + a_d sum_k exp(-s_g(k)) lambda_k L_k + a_d sum_g s_g   (a_d = 1, lambda_k = 1, s init 0).

    variant "layer_wise": one s per term (g(k) = k). variant "per_loss": one s per distiller type
    (the term's kind; a path's term has its distiller's name), shared by that type's terms; the
    group's s enters the regulariser once, so its terms act as one task whose loss is the sum of
    theirs (the paper's "feature losses summed over stages").
    lambda_k is 1, or the term's base weight (a path's configured weight) when use_path_weights is set.
    s trains with the student's optimizer (without weight decay). At the stationary point
    exp(-s_g) = 1 / sum_{k in g} lambda_k L_k.
    The weight is the whole multiplier w_k = a_d exp(-s_g(k)) lambda_k (it carries s's gradient; the
    aggregator before the weighting split reported exp(-s_g(k)) alone); the regulariser a_d sum_g s_g is
    the own term ``adaptive_distillation/reg`` (weight 1), so weight x value summed over the terms is the total.
    """

    params_model = AdaptiveDistillationParams

    def __init__(self, terms: list[TermInfo], **params) -> None:
        super().__init__(terms, **params)
        self.a_d = float(self.params.a_d)
        self.variant = self.params.variant
        self.register_buffer("lambdas", self.base.clone() if self.params.use_path_weights else self.ones(),
                             persistent=False)
        groups = [t.kind if self.variant == "per_loss" else t.name for t in self.terms]
        self.group_names = list(dict.fromkeys(groups))
        self.log_vars = nn.Parameter(torch.zeros(len(self.group_names)))
        self.register_buffer("group_of_term", torch.tensor([self.group_names.index(g) for g in groups],
                                                           dtype=torch.long), persistent=False)

    def own_terms(self) -> list[TermInfo]:
        return [TermInfo(REG, 1.0, weighable=False, kind=REG)]

    def weigh(self, values, ctx, grads) -> torch.Tensor:
        return self.a_d * torch.exp(-self.log_vars)[self.group_of_term] * self.lambdas

    def own_values(self, values, ctx) -> dict[str, torch.Tensor]:
        return {REG: self.a_d * self.log_vars.sum()}
