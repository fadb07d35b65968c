"""Zagoruyko & Komodakis 2017, attention transfer: mean (a_s - a_t)^2 with a = normalise(mean_c F^2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.params import NoParams
from engine.ops import resize_to
from engine.paths.registry import DISTILLERS
from engine.paths.base import Distiller, Shape, StepContext
from engine.paths.shapes import feature_map_problem


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W): channel mean of F^2 (p = 2, as in the paper), where the network "looks"."""
    return features.pow(2).mean(1, keepdim=True)


@DISTILLERS.register("at", "AT attention transfer: mean squared gap of normalised channel-energy maps (weight 1000)")
class AT(Distiller):
    accepts = ("feature_map",)
    default_weight = 1000.0
    params_model = NoParams

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        return feature_map_problem(student_shape, teacher_shape)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        # Channel counts drop out in the channel mean; the student's map is brought to the
        # teacher's spatial size so the teacher's target stays untouched.
        a_s = resize_to(attention_map(student), teacher.shape[-2:]).flatten(1)
        a_t = attention_map(teacher).flatten(1)
        return (F.normalize(a_s, dim=1) - F.normalize(a_t, dim=1)).pow(2).mean()
