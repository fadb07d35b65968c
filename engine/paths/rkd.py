"""Park et al. 2019, relational KD (RepDistiller's form): w_d smoothL1 of mean-normalised pairwise
distances + w_a smoothL1 of the cosines of all triplet angles. Taps are flattened; shapes may differ.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from engine.params import Params
from engine.ops import triplet_angles
from engine.paths.registry import DISTILLERS
from engine.paths.base import Distiller, Shape, StepContext


def normalised_distances(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """(B, B) Euclidean distances over their off-diagonal mean; the diagonal is exactly 0.

    Via the Gram form with a clamp (as the reference): differentiable where the sqrt of an
    exact 0 would not be, and the masked diagonal carries no gradient.
    """
    flat = x.flatten(1)
    sq = flat.pow(2).sum(1)
    off_diagonal = ~torch.eye(len(flat), dtype=torch.bool, device=flat.device)
    dist = (sq[:, None] + sq[None, :] - 2 * flat @ flat.T).clamp(min=eps).sqrt() * off_diagonal
    return dist / dist[off_diagonal].mean()


class RKDParams(Params):
    distance_weight: float = Field(25.0, ge=0, description="weight of the pairwise-distance term")
    angle_weight: float = Field(50.0, ge=0, description="weight of the triplet-angle term")


@DISTILLERS.register("rkd", "RKD relational: 25 smoothL1 of pairwise distances + 50 smoothL1 of triplet angles")
class RKD(Distiller):
    accepts = ("embedding", "logits", "feature_map")
    default_weight = 1.0
    params_model = RKDParams

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info=None, **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        self.distance_weight, self.angle_weight = float(self.params.distance_weight), float(self.params.angle_weight)

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        return None  # batch-relational: any two shapes compare

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        distance = F.smooth_l1_loss(normalised_distances(student), normalised_distances(teacher))
        angle = F.smooth_l1_loss(triplet_angles(student), triplet_angles(teacher))
        return self.distance_weight * distance + self.angle_weight * angle
