"""Huang & Wang 2017, neuron selectivity transfer (RepDistiller's form): squared MMD with the polynomial
kernel k(a, b) = (a.b)^2 between the sets of channel maps, each map L2-normalised over space.

Channels are the samples of each distribution, so their counts may differ; the student's maps are
resized to the teacher's spatial size so both live in the same space.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.params import NoParams
from engine.paths.registry import DISTILLERS
from engine.ops import resize_to
from engine.paths.shapes import feature_map_problem
from engine.paths.base import Distiller, Shape, StepContext


def _channel_maps(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W), each channel's map unit length."""
    return F.normalize(x.flatten(2), dim=2)


def _mean_poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b.transpose(1, 2)).pow(2).mean()


@DISTILLERS.register("nst", "NST neuron selectivity: polynomial-kernel MMD^2 of normalised channel maps (weight 50)")
class NST(Distiller):
    accepts = ("feature_map",)
    default_weight = 50.0
    params_model = NoParams

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        return feature_map_problem(student_shape, teacher_shape)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        s = _channel_maps(resize_to(student, teacher.shape[-2:]))
        t = _channel_maps(teacher)
        return _mean_poly_kernel(t, t) + _mean_poly_kernel(s, s) - 2 * _mean_poly_kernel(s, t)
