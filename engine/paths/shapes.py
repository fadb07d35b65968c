"""Shape checks and grid matching several distillers share (at and nst; fitnet and vid), so no distiller
imports another."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from engine.paths.base import Shape

#: how AT and NST bring maps of different spatial size together (their ``resize`` parameter)
Resize = Literal["pool_larger_map", "legacy"]
RESIZE_DESCRIPTION = ("how maps of different spatial size meet: pool_larger_map (RepDistiller's: the larger "
                      "feature map is average-pooled to the smaller size first) or legacy (PathScope before "
                      "issue 13: the student's map is resized to the teacher's, bilinearly when smaller)")


def feature_map_problem(student_shape: Shape, teacher_shape: Shape) -> str | None:
    """Refuses anything but two (C, H, W) maps; channels and spatial sizes may differ."""
    if len(student_shape) != 3 or len(teacher_shape) != 3:
        return (f"needs feature maps (C, H, W) on both sides but student tap is {tuple(student_shape)} "
                f"and teacher tap is {tuple(teacher_shape)}")
    return None


def same_rank_problem(student_shape: Shape, teacher_shape: Shape) -> str | None:
    """Regressors map channels and resizing maps H, W, but a map cannot regress onto a vector."""
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(s) != len(t) or len(s) not in (1, 3):
        return (f"needs two feature maps (C, H, W) or two embeddings (D,) but student tap is {s} "
                f"and teacher tap is {t}")
    return None


def pool_to_common_grid(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both (B, C, H, W) maps average-pooled to (min H, min W): the larger map shrinks, the smaller stays
    as it is (RepDistiller's AT and NST convention; nothing is ever upsampled)."""
    size = (min(student.shape[-2], teacher.shape[-2]), min(student.shape[-1], teacher.shape[-1]))
    return _pool_to(student, size), _pool_to(teacher, size)


def _pool_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x if tuple(x.shape[-2:]) == size else F.adaptive_avg_pool2d(x, size)
