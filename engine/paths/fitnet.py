"""Romero et al. 2015, FitNets hints: MSE(regressor(F_s), F_t) with a learnable conv regressor.

Shares its shape checks with vid (engine/paths/shapes.py). An embedding (B, D) is treated as a (B, D, 1, 1) map (engine/ops.py's
as_map), so one conv regressor serves both kinds.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from pydantic import Field

from engine.params import Params
from engine.paths.registry import DISTILLERS
from engine.ops import as_map, student_on_teacher_grid
from engine.paths.base import Distiller, Shape, StepContext
from engine.paths.shapes import refuse_bad_shapes, same_rank_problem


class FitNetParams(Params):
    kernel_size: Literal[1, 3] = Field(3, description="the regressor's conv kernel (an embedding always uses 1)")


@DISTILLERS.register("fitnet", "FitNet hints: MSE between conv-regressed student and teacher features (weight 100)")
class FitNet(Distiller):
    accepts = ("feature_map", "embedding")
    default_weight = 100.0
    params_model = FitNetParams

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info=None, **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        refuse_bad_shapes(type(self), student_shape, teacher_shape)
        kernel_size = self.params.kernel_size
        k = kernel_size if len(student_shape) == 3 else 1  # an embedding is a 1x1 map
        s_c, t_c = student_shape[0], teacher_shape[0]
        # No ReLU after BN (RepDistiller's ConvReg has one): taps may be pre-activation, and a
        # ReLU would make every negative teacher value unreachable.
        self.regressor = nn.Sequential(nn.Conv2d(s_c, t_c, k, padding=k // 2, bias=False), nn.BatchNorm2d(t_c))

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        return same_rank_problem(student_shape, teacher_shape)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return F.mse_loss(self.regressor(student_on_teacher_grid(student, teacher)), as_map(teacher))
