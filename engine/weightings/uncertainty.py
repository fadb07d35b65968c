"""Kendall, Gal & Cipolla 2018: homoscedastic-uncertainty weighting of the distillation terms."""
from __future__ import annotations

import torch
from torch import nn

from engine.params import NoParams
from engine.terms import TermInfo
from engine.weightings.base import Weighting
from engine.weightings.registry import WEIGHTINGS

REG = "uncertainty/reg"


@WEIGHTINGS.register("uncertainty", "Kendall uncertainty weighting: 0.5 exp(-s_k) L_k + 0.5 s_k, s_k learnt")
class Uncertainty(Weighting):
    """L = CE + sum_k [0.5 exp(-s_k) L_k + 0.5 s_k], one learnable log-variance s_k per term (init 0).

    s trains with the student's optimizer (without weight decay). For a loss held at L_k the
    optimum is exp(-s_k) = 1/L_k, so each term's weighted loss settles at 1/2 whatever its scale.
    The weight is the multiplier w_k = 0.5 exp(-s_k) (it carries s's gradient); the regulariser
    0.5 sum_k s_k is the own term ``uncertainty/reg`` (weight 1), so weight x value summed over the
    terms is the total. Deviations from the paper: the task CE is not a learnt task (it keeps
    weight 1), and the base weights are ignored (the learnt s_k absorbs any constant scale).
    """

    params_model = NoParams

    def __init__(self, terms: list[TermInfo], **params) -> None:
        super().__init__(terms, **params)  # unknown parameters raise ValueError
        self.log_vars = nn.Parameter(torch.zeros(len(self.terms)))

    def own_terms(self) -> list[TermInfo]:
        return [TermInfo(REG, 1.0, weighable=False, kind=REG)]

    def weigh(self, values, ctx, grads) -> torch.Tensor:
        return 0.5 * torch.exp(-self.log_vars)

    def own_values(self, values, ctx) -> dict[str, torch.Tensor]:
        return {REG: 0.5 * self.log_vars.sum()}
