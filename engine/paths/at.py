"""Zagoruyko & Komodakis 2017, attention transfer: mean (a_s - a_t)^2 with a = normalise(mean_c F^2).

Follows RepDistiller (HobbitLong/RepDistiller, distiller_zoo/AT.py): when the two maps differ in spatial
size, the larger *feature map* is average-pooled (adaptively) to the smaller size before the attention
maps are formed, whichever side is larger. ``resize: legacy`` keeps PathScope's earlier convention: the
student's *attention map* is brought to the teacher's size (pooled when larger, bilinearly upsampled when
smaller), which squares before averaging and so gives a different loss on those paths.
Deliberate difference: a non-square pair is pooled to (min H, min W); the reference assumes square maps.
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


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W): channel mean of F^2 (p = 2, as in the paper), where the network "looks"."""
    return features.pow(2).mean(1, keepdim=True)


class ATParams(Params):
    resize: Resize = Field("pool_larger_map", description=RESIZE_DESCRIPTION)


@DISTILLERS.register("at", "AT attention transfer: mean squared gap of normalised channel-energy maps (weight 1000)")
class AT(Distiller):
    accepts = ("feature_map",)
    default_weight = 1000.0
    params_model = ATParams
    has_sample_losses = True

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        return feature_map_problem(student_shape, teacher_shape)

    def _flat_maps(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both attention maps on one grid, flattened and L2-normalised per sample: (B, H*W) each."""
        if self.params.resize == "legacy":
            a_s = resize_to(attention_map(student), teacher.shape[-2:])
            a_t = attention_map(teacher)
        else:
            student, teacher = pool_to_common_grid(student, teacher)
            a_s, a_t = attention_map(student), attention_map(teacher)
        return F.normalize(a_s.flatten(1), dim=1), F.normalize(a_t.flatten(1), dim=1)

    def sample_losses(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """(B,): each sample's mean squared gap over the grid; every sample has the same grid, so their
        mean is ``forward``."""
        a_s, a_t = self._flat_maps(student, teacher)
        return (a_s - a_t).pow(2).mean(1)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self.sample_losses(student, teacher, ctx).mean()
