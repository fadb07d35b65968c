"""Peng et al. 2019, correlation congruence: MSE between B x B correlation matrices, each a P-order
Taylor expansion of a Gaussian RBF kernel on L2-normalised features:

    k(a, b) = exp(-gamma ||a - b||^2) = exp(-2 gamma) exp(2 gamma a.b)
            ~ sum_{p<=P} exp(-2 gamma) (2 gamma)^p / p! (a.b)^p        (unit a, b)

(gamma 0.4, P 2, as in the public re-implementations). Taps are flattened; shapes may differ.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from engine.params import Params
from engine.paths.registry import DISTILLERS
from engine.paths.base import Distiller, Shape, StepContext


def taylor_rbf_correlation(x: torch.Tensor, gamma: float, order: int) -> torch.Tensor:
    unit = F.normalize(x.flatten(1), dim=1)
    cosine = unit @ unit.T
    return sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * cosine.pow(p)
               for p in range(order + 1))


class CCParams(Params):
    gamma: float = Field(0.4, gt=0, description="the Gaussian kernel's gamma")
    order: int = Field(2, ge=1, description="order of the kernel's Taylor expansion")


@DISTILLERS.register("cc", "CC correlation congruence: MSE of Taylor-expanded Gaussian-kernel correlations (weight 0.02)")
class CC(Distiller):
    accepts = ("embedding", "logits", "feature_map")
    default_weight = 0.02
    params_model = CCParams

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info=None, **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        self.gamma, self.order = float(self.params.gamma), int(self.params.order)

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        return None  # batch-relational: any two shapes compare

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return F.mse_loss(taylor_rbf_correlation(student, self.gamma, self.order),
                          taylor_rbf_correlation(teacher, self.gamma, self.order))
