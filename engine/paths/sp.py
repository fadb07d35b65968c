"""Tung & Mori 2019, similarity-preserving KD: ||rownorm(G_t) - rownorm(G_s)||_F^2 / B^2, G = F F^T.

Only B x B similarities are compared, so student and teacher taps may have any shapes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.params import NoParams
from engine.paths.registry import DISTILLERS
from engine.paths.base import Distiller, Shape, StepContext


def row_normalised_gram(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    return F.normalize(flat @ flat.T, dim=1)


@DISTILLERS.register("sp", "SP similarity-preserving: squared gap of row-normalised batch Gram matrices (weight 3000)")
class SP(Distiller):
    accepts = ("feature_map", "embedding")
    default_weight = 3000.0
    params_model = NoParams

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        return None  # batch-relational: any two shapes compare

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        batch = student.shape[0]
        return (row_normalised_gram(teacher) - row_normalised_gram(student)).pow(2).sum() / batch**2
