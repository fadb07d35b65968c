"""Passalis & Tefas 2018, probabilistic knowledge transfer (RepDistiller's form): mean over the B x B
entries of p_t log(p_t / p_s), p = row-normalised (cos + 1) / 2 similarities. Shapes may differ.
"""
from __future__ import annotations

import torch

from engine.params import NoParams
from engine.paths.registry import DISTILLERS
from engine.paths.base import Distiller, Shape, StepContext

EPS = 1e-7  # the reference's guard against zero norms and log(0)


def conditional_probabilities(x: torch.Tensor) -> torch.Tensor:
    flat = x.flatten(1)
    unit = flat / (flat.norm(dim=1, keepdim=True) + EPS)
    similarity = (unit @ unit.T + 1.0) / 2.0  # cosine kernel moved into [0, 1]
    return similarity / similarity.sum(dim=1, keepdim=True)


@DISTILLERS.register("pkt", "PKT probabilistic transfer: KL between cosine-similarity distributions (weight 3e4)")
class PKT(Distiller):
    accepts = ("embedding", "logits", "feature_map")
    default_weight = 30000.0
    params_model = NoParams

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        return None  # batch-relational: any two shapes compare

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        p_s, p_t = conditional_probabilities(student), conditional_probabilities(teacher)
        return (p_t * torch.log((p_t + EPS) / (p_s + EPS))).mean()
