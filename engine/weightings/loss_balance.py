"""Loss-magnitude balancing: every weighable term is rescaled, with stop-gradient ratios, to the task loss's size.

    w_k = ratio * lambda_k * sg(L_task / max(L_k, min_loss))      so that w_k L_k = ratio * lambda_k * L_task in value

L_task is the task cross-entropy of the step (the same CE of the student's logits and the labels the loop trains,
recomputed here because a weighting sees only the weighable terms) and lambda_k is 1, or the term's base weight (its
path's configured weight) with ``use_path_weights``. The weights are constants (sg: stop-gradient), so each term's
gradient keeps its own direction and only its scale changes: every distillation signal pulls as hard, in loss units,
as the task does, whatever its native scale (an AT loss near 1e-3 and a KD loss near 1 count alike), with no
learnt parameters and no tuning. This is the plain magnitude-normalisation baseline multitask comparisons include;
no reference implementation is followed. ``min_loss`` bounds the weight of a term whose value reaches 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from engine.params import Params
from engine.step import StepContext
from engine.terms import TermInfo
from engine.vocabulary import LOGITS_SPOT
from engine.weightings.base import Weighting
from engine.weightings.registry import WEIGHTINGS


class LossBalanceParams(Params):
    ratio: float = Field(1.0, gt=0, description="each weighted term's value as a multiple of the task loss")
    use_path_weights: bool = Field(False, description="lambda_k: each term's configured weight instead of 1")
    min_loss: float = Field(1e-8, gt=0, description="floor of a term's value in the ratio (a term at 0 would "
                                                    "otherwise get an unbounded weight)")


@WEIGHTINGS.register("loss_balance", "loss-magnitude balancing: w_k = sg(L_task / L_k), every term's weighted "
                                     "value equals the task loss's, its gradient direction its own")
class LossBalance(Weighting):
    params_model = LossBalanceParams

    def __init__(self, terms: list[TermInfo], **params) -> None:
        super().__init__(terms, **params)
        self.ratio, self.min_loss = float(self.params.ratio), float(self.params.min_loss)
        self.register_buffer("lambdas", self.base.clone() if self.params.use_path_weights else self.ones(),
                             persistent=False)

    def weigh(self, values: torch.Tensor, ctx: StepContext, grads: torch.Tensor | None) -> torch.Tensor:
        task = task_loss(ctx).detach()
        return self.ratio * self.lambdas * task / values.detach().clamp_min(self.min_loss)


def task_loss(ctx: StepContext) -> torch.Tensor:
    """The step's task cross-entropy, from the student's logits tap and the labels."""
    logits = ctx.student_taps.get(LOGITS_SPOT)
    if logits is None:
        raise ValueError(f"loss_balance needs the student's logits: ctx.student_taps has no {LOGITS_SPOT!r} spot "
                         f"(it has {sorted(ctx.student_taps) or 'none'})")
    return F.cross_entropy(logits.float(), ctx.labels)
