"""Hinton et al. 2015: soft targets, T^2 KL(softmax(z_t/T) || softmax(z_s/T))."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from engine.params import Params
from engine.paths.registry import DISTILLERS
from engine.paths.base import Distiller, StepContext


def soft_target_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(p_t || p_s), averaged over the batch; T^2 keeps gradients comparable across T."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


class KDParams(Params):
    temperature: float = Field(4.0, gt=0, description="softening temperature T of both softmaxes")


@DISTILLERS.register("kd", "Hinton KD: T^2 KL between softened teacher and student logits (T 4)")
class KD(Distiller):
    accepts = ("logits",)
    default_weight = 1.0
    params_model = KDParams

    def __init__(self, student_shape, teacher_shape, info=None, **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        self.temperature = float(self.params.temperature)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return soft_target_kl(student, teacher, self.temperature)
