"""Yim et al. 2017, flow of solution procedure: MSE between FSP matrices G = F1^T F2 / (H W), the
channel-by-channel inner products of two consecutive stages' maps (spot "layer1+layer2").

As in the original, student and teacher G must have the same (C1, C2): there is no adapter.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.params import NoParams
from engine.paths.registry import DISTILLERS
from engine.paths.base import Distiller, Shape, StepContext


def fsp_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """(B, C1, H1, W1), (B, C2, H2, W2) -> (B, C1, C2); the larger map is average-pooled to the smaller size."""
    size = (min(first.shape[-2], second.shape[-2]), min(first.shape[-1], second.shape[-1]))
    a = F.adaptive_avg_pool2d(first, size).flatten(2)
    b = F.adaptive_avg_pool2d(second, size).flatten(2)
    return a @ b.transpose(1, 2) / a.shape[-1]


def _pair_ok(shape: Shape) -> bool:
    return len(shape) == 2 and all(len(part) == 3 for part in shape)


def _describe(shape: Shape) -> str:
    """'(16, 8, 8) + (32, 4, 4)' for a pair of shapes, the plain shape otherwise."""
    if all(isinstance(part, (tuple, list)) for part in shape):
        return " + ".join(str(tuple(part)) for part in shape)
    return str(tuple(shape))


@DISTILLERS.register("fsp", "FSP flow of solution: MSE of channel inner-product matrices of two stages (weight 50)")
class FSP(Distiller):
    accepts = ("feature_map",)
    default_weight = 50.0
    spots_per_side = 2
    params_model = NoParams

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        s, t = _describe(student_shape), _describe(teacher_shape)
        if not (_pair_ok(student_shape) and _pair_ok(teacher_shape)):
            return f"needs two feature maps (C, H, W) per side but student taps are {s} and teacher taps are {t}"
        s_channels = (student_shape[0][0], student_shape[1][0])
        t_channels = (teacher_shape[0][0], teacher_shape[1][0])
        if s_channels != t_channels:
            return (f"needs equal (C1, C2) on both sides (FSP matrices are compared entry by entry) but "
                    f"student taps are {s} and teacher taps are {t}")
        return None

    def forward(self, student: tuple[torch.Tensor, torch.Tensor], teacher: tuple[torch.Tensor, torch.Tensor],
                ctx: StepContext) -> torch.Tensor:
        return F.mse_loss(fsp_matrix(*student), fsp_matrix(*teacher))
