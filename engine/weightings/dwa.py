"""Liu, Johns & Davison 2019 (MTAN): Dynamic Weight Average over the distillation terms."""
from __future__ import annotations

import torch
from pydantic import Field

from engine.params import Params
from engine.terms import TermInfo
from engine.weightings.base import Weighting
from engine.weightings.registry import WEIGHTINGS


class DWAParams(Params):
    temperature: float = Field(2.0, gt=0, description="softmax temperature T over the loss ratios (larger: flatter)")


@WEIGHTINGS.register("dwa", "Dynamic Weight Average: w_k = K softmax(L_k(t-1) / L_k(t-2) / T) of epoch-mean losses")
class DWA(Weighting):
    """w_k(t) = K softmax_k( r_k / T ),  r_k = L_k(t-1) / L_k(t-2),  T = 2.

    L_k(e) is term k's mean value over training epoch e (accumulated in observe, rolled in at
    the epoch's end). Terms whose loss falls more slowly get more weight. Every weight is 1 for
    the first two epochs, which have no ratio yet. The base weights are ignored, as in the paper
    (raw losses, weights summing to K). The epoch-mean history lives in buffers, so checkpoints
    carry it and a resumed run continues with the same weights.
    """

    params_model = DWAParams

    def __init__(self, terms: list[TermInfo], **params) -> None:
        super().__init__(terms, **params)
        self.temperature = float(self.params.temperature)
        k = len(self.terms)
        self.register_buffer("epoch_means", torch.zeros(2, k, dtype=torch.float64))  # rows: epochs t-2, t-1
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("loss_sum", torch.zeros(k, dtype=torch.float64))  # the running epoch
        self.register_buffer("loss_count", torch.zeros((), dtype=torch.long))

    def weigh(self, values, ctx, grads) -> torch.Tensor:
        if int(self.epochs_seen) < 2:
            return self.ones()
        ratio = self.epoch_means[1] / self.epoch_means[0].clamp_min(1e-12)
        return (len(self.terms) * torch.softmax(ratio / self.temperature, dim=0)).float()

    def observe(self, values: torch.Tensor) -> None:
        self.loss_sum += values.double()
        self.loss_count += 1

    def on_epoch_end(self, epoch: int) -> None:
        if int(self.loss_count) == 0:
            return
        self.epoch_means[0] = self.epoch_means[1]
        self.epoch_means[1] = self.loss_sum / self.loss_count
        self.epochs_seen += 1
        self.loss_sum.zero_()
        self.loss_count.zero_()
