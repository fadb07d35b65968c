"""Zhao et al. 2022, decoupled KD (mdistiller's form): alpha TCKD + beta NCKD, each T^2 KL batchmean.

TCKD compares the binary split (target class, everything else); NCKD compares the distributions
over the non-target classes only. The whole term ramps up linearly over the warm-up epochs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from engine.params import Params
from engine.paths.registry import DISTILLERS
from engine.paths.base import Distiller, Shape, StepContext


def _drop_target(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C) -> (B, C-1) without each row's target column (exact, unlike mdistiller's -1000 mask)."""
    keep = torch.ones_like(x, dtype=torch.bool).scatter_(1, target[:, None], False)
    return x[keep].view(x.shape[0], -1)


def _binary_log_probs(log_p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, 2): log p(target) and log p(not target); the latter as a logsumexp for stability."""
    log_rest = torch.logsumexp(_drop_target(log_p, target), dim=1, keepdim=True)
    return torch.cat([log_p.gather(1, target[:, None]), log_rest], dim=1)


def _kl(log_p_t: torch.Tensor, log_p_s: torch.Tensor) -> torch.Tensor:
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


def dkd_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
             alpha: float, beta: float, temperature: float) -> torch.Tensor:
    log_p_s = F.log_softmax(student / temperature, dim=1)
    log_p_t = F.log_softmax(teacher / temperature, dim=1)
    tckd = _kl(_binary_log_probs(log_p_t, target), _binary_log_probs(log_p_s, target))
    nckd = _kl(F.log_softmax(_drop_target(teacher, target) / temperature, dim=1),
               F.log_softmax(_drop_target(student, target) / temperature, dim=1))
    return (alpha * tckd + beta * nckd) * temperature**2


class DKDParams(Params):
    alpha: float = Field(1.0, ge=0, description="weight of TCKD, the target-class term")
    beta: float = Field(8.0, ge=0, description="weight of NCKD, the non-target-class term")
    temperature: float = Field(4.0, gt=0, description="softening temperature T")
    warmup_epochs: int = Field(20, ge=0, description="epochs over which the loss ramps up linearly from 0")


@DISTILLERS.register("dkd", "DKD decoupled KD: alpha TCKD + beta NCKD (alpha 1, beta 8, T 4, 20-epoch warm-up)")
class DKD(Distiller):
    accepts = ("logits",)
    default_weight = 1.0
    params_model = DKDParams

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info=None, **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        p = self.params
        self.alpha, self.beta, self.temperature = float(p.alpha), float(p.beta), float(p.temperature)
        self.warmup_epochs = int(p.warmup_epochs)

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        problem = super().shape_problem(student_shape, teacher_shape)
        if problem is None and tuple(student_shape)[-1] < 2:
            return (f"needs at least 2 classes but student tap is {tuple(student_shape)} "
                    f"and teacher tap is {tuple(teacher_shape)}")
        return problem

    def warmup_factor(self, epoch: int) -> float:
        """min((epoch + 1) / warmup, 1): ctx.epoch counts from 0 where mdistiller's counts from 1,
        so the first epoch weighs 1/warmup and epoch index warmup-1 reaches full weight, as there."""
        if self.warmup_epochs == 0:
            return 1.0
        return min((epoch + 1) / self.warmup_epochs, 1.0)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        loss = dkd_loss(student, teacher, ctx.labels, self.alpha, self.beta, self.temperature)
        return self.warmup_factor(ctx.epoch) * loss
