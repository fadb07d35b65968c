"""Hand-tuned weights: each path's weight from the spec, else its distiller's conventional one."""
from __future__ import annotations

import torch

from engine.aggregators.registry import AGGREGATORS
from engine.aggregators.base import Aggregator


@AGGREGATORS.register("fixed", "each path weighs what the spec says (default: the distiller's conventional weight)")
class Fixed(Aggregator):
    def __init__(self, path_ids, path_weights, task_weight: float = 1.0) -> None:
        """task_weight scales the CE term too (RepDistiller's KD recipe uses 0.1 CE + 0.9 KD)."""
        super().__init__(path_ids, path_weights)
        if task_weight < 0:
            raise ValueError(f"task_weight must be >= 0, got {task_weight}")
        self.task_weight = float(task_weight)

    def weights(self, losses, ctx) -> dict[str, torch.Tensor]:
        device = losses["task"].device
        return {pid: torch.tensor(self.path_weights[pid], device=device) for pid in self.path_ids}
