"""Every term weighs 1, whatever its scale: the plain multitask baseline."""
from __future__ import annotations

import torch

from engine.params import NoParams
from engine.weightings.base import Weighting
from engine.weightings.registry import WEIGHTINGS


@WEIGHTINGS.register("equal", "every path loss weighs 1 (CE + sum of path losses)")
class Equal(Weighting):
    params_model = NoParams

    def weigh(self, values, ctx, grads) -> torch.Tensor:
        return self.ones()
