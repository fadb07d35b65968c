"""Huang & Wang 2017, neuron selectivity transfer: squared MMD with the polynomial kernel k(a, b) = (a.b)^2
between the sets of channel maps, each map L2-normalised over space.

Follows RepDistiller (HobbitLong/RepDistiller, distiller_zoo/NST.py, its full loss): channels are the samples
of each distribution, so their counts may differ; when the spatial sizes differ, the larger feature map is
average-pooled (adaptively) to the smaller size first, whichever side is larger. ``resize: legacy`` keeps
PathScope's earlier convention (the student's map resized to the teacher's size, bilinearly when smaller).
Deliberate difference: a non-square pair is pooled to (min H, min W); the reference assumes square maps.

The loss decomposes per sample: each sample's MMD compares its own two sets of channel maps, and every
sample has the same channel counts, so the batch loss is the mean of the per-sample ones.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from engine.ops import resize_to
from engine.params import Params
from engine.paths.base import Distiller, Shape, StepContext
from engine.paths.registry import DISTILLERS
from engine.paths.shapes import RESIZE_DESCRIPTION, Resize, feature_map_problem, pool_to_common_grid


def _channel_maps(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H*W), each channel's map unit length."""
    return F.normalize(x.flatten(2), dim=2)


def _mean_poly_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,): per sample, the mean over channel pairs of (a_i . b_j)^2."""
    return (a @ b.transpose(1, 2)).pow(2).mean((1, 2))


class NSTParams(Params):
    resize: Resize = Field("pool_larger_map", description=RESIZE_DESCRIPTION)


@DISTILLERS.register("nst", "NST neuron selectivity: polynomial-kernel MMD^2 of normalised channel maps (weight 50)")
class NST(Distiller):
    accepts = ("feature_map",)
    default_weight = 50.0
    params_model = NSTParams
    has_sample_losses = True

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        return feature_map_problem(student_shape, teacher_shape)

    def sample_losses(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        if self.params.resize == "legacy":
            student = resize_to(student, teacher.shape[-2:])
        else:
            student, teacher = pool_to_common_grid(student, teacher)
        s, t = _channel_maps(student), _channel_maps(teacher)
        return _mean_poly_kernel(t, t) + _mean_poly_kernel(s, s) - 2 * _mean_poly_kernel(s, t)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self.sample_losses(student, teacher, ctx).mean()
