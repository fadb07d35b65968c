"""Hand-tuned weights: each term's base weight (a path's from the spec, else its distiller's conventional one)."""
from __future__ import annotations

import torch
from pydantic import Field

from engine.params import Params
from engine.weightings.base import Weighting
from engine.weightings.registry import WEIGHTINGS


class FixedParams(Params):
    task_weight: float = Field(1.0, ge=0, description="weight of the task cross-entropy (RepDistiller's KD: 0.1)")


@WEIGHTINGS.register("fixed", "each path weighs what the spec says (default: the distiller's conventional weight)")
class Fixed(Weighting):
    """w_k = the term's base weight; task_weight scales the CE term too (RepDistiller's KD: 0.1 CE + 0.9 KD).

    With a path method, the base weights are the method's (AMTML's hint_weight, DFA's lam x weight).
    """

    params_model = FixedParams

    def __init__(self, terms, **params) -> None:
        super().__init__(terms, **params)
        self.task_weight = float(self.params.task_weight)

    def weigh(self, values, ctx, grads) -> torch.Tensor:
        return self.base
