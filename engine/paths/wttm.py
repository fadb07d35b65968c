"""Zheng & Yang, "Knowledge Distillation Based on Transformed Teacher Matching" (WTTM, ICLR 2024).

Temperature only on the teacher, read as a power transform of its probabilities: with p_t = softmax(z_t),

    p_t^(gamma) = p_t^gamma / U(p_t),   U(p_t) = sum_c p_t[c]^gamma       (gamma = 1/T; equals softmax(gamma z_t))
    L = mean_i U(p_t[i]) KL(p_t^(gamma)[i] || softmax(z_s[i]))

the student at temperature 1. The sample weight U (a power sum, large when the teacher is unsure) is what
WTTM adds to TTM. Follows zkxufo/TTM ``distiller_zoo/wttm.py``, computed in log space (U as a logsumexp) so
that a near-zero teacher probability raised to gamma stays finite. Defaults: gamma 0.2 and path weight 4,
the WTTM setting of that repository's README (``--ttm_l 0.2 -a 4``, there combined with CRD); the paper
tunes T and beta per teacher/student pair (its appendix A.4), so treat both as starting points.

Decomposes per sample: U_i KL_i. With ``standardize`` the logits are z-scored first (Sun et al., CVPR 2024).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from engine.params import Params
from engine.paths.base import Shape, StepContext
from engine.paths.logit_ops import SampleLogitDistiller, standardize_field
from engine.paths.registry import DISTILLERS


class WTTMParams(Params):
    gamma: float = Field(0.2, gt=0, le=1, description="exponent of the teacher's power transform (1/T; "
                                                      "the reference's --ttm_l)")
    standardize: bool = standardize_field()


@DISTILLERS.register("wttm", "WTTM: teacher power-transformed (gamma 0.2), student untempered, "
                             "each sample weighted by the teacher's power sum")
class WTTM(SampleLogitDistiller):
    default_weight = 4.0
    params_model = WTTMParams

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info=None, **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        self.gamma = float(self.params.gamma)

    def _sample_losses(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        powered = self.gamma * F.log_softmax(teacher, dim=1)  # log p_t^gamma
        log_weight = torch.logsumexp(powered, dim=1)  # log U(p_t)
        log_target = powered - log_weight[:, None]  # log of the transformed teacher
        kl = F.kl_div(F.log_softmax(student, dim=1), log_target, reduction="none", log_target=True).sum(dim=1)
        return log_weight.exp() * kl
