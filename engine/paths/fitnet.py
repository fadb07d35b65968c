"""Romero et al. 2015, FitNets hints: MSE(regressor(F_s), F_t) with a learnable conv regressor.

Follows RepDistiller (HobbitLong/RepDistiller, distiller_zoo/FitNet.py, the regressor of models/util.py's
ConvReg). Deliberate differences: no ReLU after the regressor's BatchNorm (see __init__), and a student map of
another spatial size is first resized to the teacher's (engine/ops.py's student_on_teacher_grid) instead of
ConvReg's strided or transposed convolution. Shares its shape checks with vid (engine/paths/shapes.py). An
embedding (B, D) is treated as a (B, D, 1, 1) map (engine/ops.py's as_map), so one conv regressor serves both
kinds. The loss decomposes per sample: ``sample_losses`` runs the regressor on the whole batch, then takes each
sample's mean squared error.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from pydantic import Field

from engine.params import Params
from engine.paths.registry import DISTILLERS
from engine.ops import as_map, student_on_teacher_grid
from engine.paths.base import Distiller, Shape, StepContext
from engine.paths.shapes import same_rank_problem


class FitNetParams(Params):
    kernel_size: Literal[1, 3] = Field(3, description="the regressor's conv kernel (an embedding always uses 1)")


@DISTILLERS.register("fitnet", "FitNet hints: MSE between conv-regressed student and teacher features (weight 100)")
class FitNet(Distiller):
    accepts = ("feature_map", "embedding")
    default_weight = 100.0
    params_model = FitNetParams
    has_sample_losses = True

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info=None, **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        kernel_size = self.params.kernel_size
        k = kernel_size if len(student_shape) == 3 else 1  # an embedding is a 1x1 map
        s_c, t_c = student_shape[0], teacher_shape[0]
        # No ReLU after BN (RepDistiller's ConvReg has one): taps may be pre-activation, and a
        # ReLU would make every negative teacher value unreachable.
        self.regressor = nn.Sequential(nn.Conv2d(s_c, t_c, k, padding=k // 2, bias=False), nn.BatchNorm2d(t_c))

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        return same_rank_problem(student_shape, teacher_shape)

    def sample_losses(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """(B,): each sample's mean squared error. The regressor runs on the whole batch (its BatchNorm
        normalises by batch statistics), so a sample's loss depends on the batch, as ``forward``'s does."""
        regressed = self.regressor(student_on_teacher_grid(student, teacher))
        return (regressed - as_map(teacher)).pow(2).flatten(1).mean(1)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self.sample_losses(student, teacher, ctx).mean()
