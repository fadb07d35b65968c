"""Shape checks several distillers share (at and nst; fitnet and vid), so no distiller imports another."""
from __future__ import annotations

from typing import TYPE_CHECKING

from engine.paths.base import Shape

if TYPE_CHECKING:
    from engine.paths.base import Distiller


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


def refuse_bad_shapes(cls: type["Distiller"], student_shape: Shape, teacher_shape: Shape) -> None:
    """Parts are sized from the shapes, so an incompatible pair must fail before they are built."""
    problem = cls.shape_problem(student_shape, teacher_shape)
    if problem:
        raise ValueError(problem)
