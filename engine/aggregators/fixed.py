"""Hand-tuned weights: each path's weight from the spec, else its distiller's conventional one."""
from __future__ import annotations

import torch

from engine.aggregators import AGGREGATORS
from engine.aggregators.base import Aggregator


@AGGREGATORS.register("fixed", "each path weighs what the spec says (default: the distiller's conventional weight)")
class Fixed(Aggregator):
    def weights(self, losses, ctx) -> dict[str, torch.Tensor]:
        device = losses["task"].device
        return {pid: torch.tensor(self.path_weights[pid], device=device) for pid in self.path_ids}
