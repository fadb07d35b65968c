"""Ahn et al. 2019, variational information distillation (RepDistiller's form):
mean of 0.5 [(mu(F_s) - F_t)^2 / sigma^2 + log sigma^2], a Gaussian NLL of the teacher given the student.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from pydantic import Field, model_validator

from engine.params import Params
from engine.paths.registry import DISTILLERS
from engine.paths.base import Distiller, Shape, StepContext
from engine.ops import as_map, student_on_teacher_grid
from engine.paths.shapes import same_rank_problem


def _conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)


class VIDParams(Params):
    init_variance: float = Field(5.0, gt=0, description="the learnt per-channel variance's start (> eps)")
    eps: float = Field(1e-5, gt=0, description="floor added to the variance")

    @model_validator(mode="after")
    def _variance_above_floor(self) -> "VIDParams":
        if not self.init_variance > self.eps:
            raise ValueError(f"init_variance ({self.init_variance:g}) must exceed eps ({self.eps:g})")
        return self


@DISTILLERS.register("vid", "VID variational information: Gaussian NLL of teacher features, learnt mean and variance")
class VID(Distiller):
    accepts = ("feature_map", "embedding")
    default_weight = 1.0
    params_model = VIDParams

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info=None, **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        init_variance, eps = self.params.init_variance, self.params.eps
        s_c, t_c = student_shape[0], teacher_shape[0]
        # Mean network with the teacher's width in the middle, as RepDistiller builds it.
        self.mean_net = nn.Sequential(_conv1x1(s_c, t_c), nn.ReLU(), _conv1x1(t_c, t_c), nn.ReLU(), _conv1x1(t_c, t_c))
        # sigma^2 = softplus(raw) + eps starts at init_variance (the reference's 5): a wide variance
        # keeps the early NLL from being dominated by the untrained mean's errors.
        raw = math.log(math.expm1(init_variance - eps))
        self.raw_variance = nn.Parameter(torch.full((t_c,), raw))
        self.eps = float(eps)

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        return same_rank_problem(student_shape, teacher_shape)

    def variance(self) -> torch.Tensor:
        """Per-channel sigma^2, shaped (1, C, 1, 1) to broadcast over maps."""
        return (F.softplus(self.raw_variance) + self.eps).view(1, -1, 1, 1)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        mean = self.mean_net(student_on_teacher_grid(student, teacher))
        var = self.variance()
        return (0.5 * ((mean - as_map(teacher)).pow(2) / var + var.log())).mean()
