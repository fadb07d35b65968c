"""Kendall, Gal & Cipolla 2018: homoscedastic-uncertainty weighting of the path losses."""
from __future__ import annotations

import torch
from torch import nn

from engine.params import NoParams
from engine.aggregators.registry import AGGREGATORS
from engine.aggregators.base import TASK, Aggregator, path_key


@AGGREGATORS.register("uncertainty", "Kendall uncertainty weighting: 0.5 exp(-s_k) L_k + 0.5 s_k, s_k learnt")
class Uncertainty(Aggregator):
    params_model = NoParams

    """L = CE + sum_k [0.5 exp(-s_k) L_k + 0.5 s_k], one learnable log-variance s_k per path (init 0).

    s trains with the student's optimizer (without weight decay). For a loss held at L_k the
    optimum is exp(-s_k) = 1/L_k, so each path's weighted loss settles at 1/2 whatever its scale.
    The reported weight is the multiplier w_k = 0.5 exp(-s_k). Deviations from the paper: the task
    CE is not a learnt task (it keeps weight 1), and path_weights are ignored (the learnt s_k
    absorbs any constant scale).
    """

    def __init__(self, path_ids, path_weights, **unknown) -> None:
        super().__init__(path_ids, path_weights, **unknown)  # unknown parameters raise ValueError
        self.log_vars = nn.Parameter(torch.zeros(len(self.path_ids)))

    def weights(self, losses, ctx) -> dict[str, torch.Tensor]:
        w = 0.5 * torch.exp(-self.log_vars.detach())
        return dict(zip(self.path_ids, w.unbind()))

    def combine(self, losses, ctx) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = losses[TASK]
        if self.path_ids:
            path = torch.stack([losses[path_key(pid)] for pid in self.path_ids])
            total = total + (0.5 * torch.exp(-self.log_vars) * path + 0.5 * self.log_vars).sum()
        return total, self.weights(losses, ctx)
