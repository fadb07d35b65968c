"""What every distiller shares.

A distiller compares one student tap with one teacher tap and returns a scalar loss.
Learnable parts (regressors, embedding heads) are built in ``__init__`` from the tapped
shapes, so they exist before the optimizer is created, train with the student and are
saved in its checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

SpotKind = str  # "feature_map" | "embedding" | "logits"


@dataclass
class StepContext:
    """What a loss term may need beyond the two taps."""

    labels: torch.Tensor
    epoch: int
    step: int
    index: torch.Tensor  # stable sample ids of the batch


class Distiller(nn.Module):
    #: spot kinds this distiller accepts on both sides
    accepts: ClassVar[tuple[SpotKind, ...]] = ()
    #: the conventional loss weight (used when a path gives none)
    default_weight: ClassVar[float] = 1.0

    def __init__(self, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], **params: Any) -> None:
        super().__init__()
        if params:
            raise ValueError(f"unknown parameter(s) {sorted(params)}")
        self.student_shape = tuple(student_shape)
        self.teacher_shape = tuple(teacher_shape)

    @classmethod
    def shape_problem(cls, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> str | None:
        """Why these two taps cannot be compared, or None. Default: shapes must be equal."""
        if tuple(student_shape) != tuple(teacher_shape):
            return (f"needs equal shapes but student tap is {tuple(student_shape)} and "
                    f"teacher tap is {tuple(teacher_shape)}")
        return None

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError
