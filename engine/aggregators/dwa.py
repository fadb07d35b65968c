"""Liu, Johns & Davison 2019 (MTAN): Dynamic Weight Average over the path losses."""
from __future__ import annotations

import torch
from pydantic import Field

from engine.params import Params
from engine.aggregators.registry import AGGREGATORS
from engine.aggregators.base import Aggregator, path_key


class DWAParams(Params):
    temperature: float = Field(2.0, gt=0, description="softmax temperature T over the loss ratios (larger: flatter)")


@AGGREGATORS.register("dwa", "Dynamic Weight Average: w_k = K softmax(L_k(t-1) / L_k(t-2) / T) of epoch-mean losses")
class DWA(Aggregator):
    """w_k(t) = K softmax_k( r_k / T ),  r_k = L_k(t-1) / L_k(t-2),  T = 2.

    L_k(e) is path k's mean loss over training epoch e (accumulated in backward, rolled in at
    the epoch's end). Paths whose loss falls more slowly get more weight. Every weight is 1 for
    the first two epochs, which have no ratio yet. path_weights are ignored, as in the paper
    (raw losses, weights summing to K). The epoch-mean history lives in buffers, so checkpoints
    carry it and a resumed run continues with the same weights.
    """

    params_model = DWAParams

    def __init__(self, path_ids, path_weights, **params) -> None:
        super().__init__(path_ids, path_weights, **params)
        self.temperature = float(self.params.temperature)
        k = len(self.path_ids)
        self.register_buffer("epoch_means", torch.zeros(2, k, dtype=torch.float64))  # rows: epochs t-2, t-1
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("loss_sum", torch.zeros(k, dtype=torch.float64))  # the running epoch
        self.register_buffer("loss_count", torch.zeros((), dtype=torch.long))

    def weights(self, losses, ctx) -> dict[str, torch.Tensor]:
        k = len(self.path_ids)
        if int(self.epochs_seen) < 2:
            w = torch.ones(k, device=self.loss_sum.device)
        else:
            ratio = self.epoch_means[1] / self.epoch_means[0].clamp_min(1e-12)
            w = (k * torch.softmax(ratio / self.temperature, dim=0)).float()
        return dict(zip(self.path_ids, w.unbind()))

    def backward(self, losses, ctx) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total, weights = super().backward(losses, ctx)
        if self.path_ids:
            self.loss_sum += torch.stack([losses[path_key(pid)].detach() for pid in self.path_ids]).double()
            self.loss_count += 1
        return total, weights

    def on_epoch_end(self, epoch: int) -> None:
        if int(self.loss_count) == 0:
            return
        self.epoch_means[0] = self.epoch_means[1]
        self.epoch_means[1] = self.loss_sum / self.loss_count
        self.epochs_seen += 1
        self.loss_sum.zero_()
        self.loss_count.zero_()
