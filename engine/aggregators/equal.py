"""Every path weighs 1, whatever its scale: the plain multitask baseline."""
from __future__ import annotations

import torch

from engine.params import NoParams
from engine.aggregators.registry import AGGREGATORS
from engine.aggregators.base import Aggregator


@AGGREGATORS.register("equal", "every path loss weighs 1 (CE + sum of path losses)")
class Equal(Aggregator):
    params_model = NoParams

    def weights(self, losses, ctx) -> dict[str, torch.Tensor]:
        one = torch.ones((), device=losses["task"].device)
        return {pid: one for pid in self.path_ids}
