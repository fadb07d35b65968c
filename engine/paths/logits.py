"""Ba & Caruana 2014, logit matching: MSE(z_s, z_t), averaged over batch and classes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.params import NoParams
from engine.paths.registry import DISTILLERS
from engine.paths.base import Distiller, StepContext


@DISTILLERS.register("logits", "logits matching: MSE between student and teacher logits")
class Logits(Distiller):
    accepts = ("logits",)
    default_weight = 1.0
    params_model = NoParams

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return F.mse_loss(student, teacher)
