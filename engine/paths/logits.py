"""Ba & Caruana 2014, logit matching: MSE(z_s, z_t), averaged over batch and classes.

torch's ``F.mse_loss`` on the two logit batches; no reference code is followed. Per sample: the mean squared
difference over that sample's classes; their batch mean is the loss.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from engine.params import NoParams
from engine.paths.registry import DISTILLERS
from engine.paths.base import Distiller, StepContext


@DISTILLERS.register("logits", "logits matching: MSE between student and teacher logits")
class Logits(Distiller):
    accepts = ("logits",)
    default_weight = 1.0
    params_model = NoParams
    has_sample_losses: ClassVar[bool] = True

    def sample_losses(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return (student - teacher).pow(2).flatten(1).mean(dim=1)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self.sample_losses(student, teacher, ctx).mean()
