"""Zhao et al. 2022, decoupled KD (mdistiller's form): alpha TCKD + beta NCKD, each T^2 KL batchmean.

TCKD compares the binary split (target class, everything else); NCKD compares the distributions
over the non-target classes only. The whole term ramps up linearly over the warm-up epochs. Follows
megvii-research/mdistiller ``mdistiller/distillers/DKD.py``, except that the target column is dropped
exactly instead of masked with -1000. Per sample: that sample's alpha TCKD + beta NCKD (times the warm-up).

With ``standardize`` the logits are z-scored first (Sun et al., CVPR 2024, logit-standardization-KD's
``mdistiller/distillers/DKD.py``). Their CIFAR-100 script (``tools/train.py``) then sets alpha 9 and
beta 81 and keeps DKD's own T; set those here to follow it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from engine.params import Params
from engine.paths.base import Shape, StepContext
from engine.paths.logit_ops import SampleLogitDistiller, drop_target, standardize_field
from engine.paths.registry import DISTILLERS


def _binary_log_probs(log_p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, 2): log p(target) and log p(not target); the latter as a logsumexp for stability."""
    log_rest = torch.logsumexp(drop_target(log_p, target), dim=1, keepdim=True)
    return torch.cat([log_p.gather(1, target[:, None]), log_rest], dim=1)


def _kl_rows(log_p_t: torch.Tensor, log_p_s: torch.Tensor) -> torch.Tensor:
    """(B,): KL(p_t || p_s) of each row."""
    return F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1)


def dkd_sample_losses(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
                      alpha: float, beta: float, temperature: float) -> torch.Tensor:
    """(B,): (alpha TCKD + beta NCKD) T^2 of each sample; their mean is mdistiller's batch loss."""
    log_p_s = F.log_softmax(student / temperature, dim=1)
    log_p_t = F.log_softmax(teacher / temperature, dim=1)
    tckd = _kl_rows(_binary_log_probs(log_p_t, target), _binary_log_probs(log_p_s, target))
    nckd = _kl_rows(F.log_softmax(drop_target(teacher, target) / temperature, dim=1),
                    F.log_softmax(drop_target(student, target) / temperature, dim=1))
    return (alpha * tckd + beta * nckd) * temperature**2


class DKDParams(Params):
    alpha: float = Field(1.0, ge=0, description="weight of TCKD, the target-class term")
    beta: float = Field(8.0, ge=0, description="weight of NCKD, the non-target-class term")
    temperature: float = Field(4.0, gt=0, description="softening temperature T")
    warmup_epochs: int = Field(20, ge=0, description="epochs over which the loss ramps up linearly from 0")
    standardize: bool = standardize_field()


@DISTILLERS.register("dkd", "DKD decoupled KD: alpha TCKD + beta NCKD (alpha 1, beta 8, T 4, 20-epoch warm-up)")
class DKD(SampleLogitDistiller):
    default_weight = 1.0
    params_model = DKDParams
    min_classes = 2

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info=None, **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        p = self.params
        self.alpha, self.beta, self.temperature = float(p.alpha), float(p.beta), float(p.temperature)
        self.warmup_epochs = int(p.warmup_epochs)

    def warmup_factor(self, epoch: int) -> float:
        """min((epoch + 1) / warmup, 1): ctx.epoch counts from 0 where mdistiller's counts from 1,
        so the first epoch weighs 1/warmup and epoch index warmup-1 reaches full weight, as there."""
        if self.warmup_epochs == 0:
            return 1.0
        return min((epoch + 1) / self.warmup_epochs, 1.0)

    def _sample_losses(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        losses = dkd_sample_losses(student, teacher, ctx.labels, self.alpha, self.beta, self.temperature)
        return self.warmup_factor(ctx.epoch) * losses
