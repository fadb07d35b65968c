"""Hand-tuned weights: each path's weight from the spec, else its distiller's conventional one."""
from __future__ import annotations

import torch
from pydantic import Field

from engine.params import Params
from engine.aggregators.registry import AGGREGATORS
from engine.aggregators.base import Aggregator


class FixedParams(Params):
    task_weight: float = Field(1.0, ge=0, description="weight of the task cross-entropy (RepDistiller's KD: 0.1)")


@AGGREGATORS.register("fixed", "each path weighs what the spec says (default: the distiller's conventional weight)")
class Fixed(Aggregator):
    params_model = FixedParams

    def __init__(self, path_ids, path_weights, **params) -> None:
        """task_weight scales the CE term too (RepDistiller's KD recipe uses 0.1 CE + 0.9 KD)."""
        super().__init__(path_ids, path_weights, **params)
        self.task_weight = float(self.params.task_weight)

    def weights(self, losses, ctx) -> dict[str, torch.Tensor]:
        device = losses["task"].device
        return {pid: torch.tensor(self.path_weights[pid], device=device) for pid in self.path_ids}
