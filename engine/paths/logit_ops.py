"""What the logit distillers (kd, dkd, dist, wttm, nkd) share: logit standardisation and per-sample losses.

Logit standardisation (Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024; reference
code sunshangquan/logit-standardization-KD, mdistiller/distillers/KD.py ``normalize``) z-scores each
sample's logits, teacher and student separately, before the temperature: softmax((z - mean(z)) / (std(z) T)).
The student then has to match the teacher's logit *relations*, not their range. As there, std is the
unbiased one (torch's default) and 1e-7 keeps a constant row finite. The paper's CIFAR-100 recipe for KD is
base temperature T 2 with KD weight 9 (task CE weight 0.1); see each distiller's docstring for its own.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field

from engine.paths.base import Distiller, Shape, StepContext

STD_EPS = 1e-7


def standardize(logits: torch.Tensor) -> torch.Tensor:
    """(B, C) -> each row z-scored: (z - mean) / (unbiased std + 1e-7), as the reference's ``normalize``."""
    mean = logits.mean(dim=1, keepdim=True)
    std = logits.std(dim=1, keepdim=True)
    return (logits - mean) / (std + STD_EPS)


def drop_target(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C) -> (B, C-1) without each row's target column (exact, unlike mdistiller's -1000 mask)."""
    keep = torch.ones_like(x, dtype=torch.bool).scatter_(1, target[:, None], False)
    return x[keep].view(x.shape[0], -1)


def standardize_field() -> Any:
    """The ``standardize`` switch every logit distiller's params model declares, last (after its own fields)."""
    return Field(False, description="z-score each sample's teacher and student logits before the temperature "
                                    "(logit standardisation, Sun et al. 2024; their CIFAR-100 KD recipe: T 2, "
                                    "weight 9)")


class LogitDistiller(Distiller):
    """A distiller on two logit taps of equal shape, with the ``standardize`` switch (its ``params_model``
    declares ``standardize: bool = standardize_field()``)."""

    accepts = ("logits",)
    #: fewest classes the loss is defined for (a target/non-target split needs 2)
    min_classes: ClassVar[int] = 1

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info=None, **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        self.standardize = bool(self.params.standardize)

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        problem = super().shape_problem(student_shape, teacher_shape)
        if problem is None and tuple(student_shape)[-1] < cls.min_classes:
            return (f"needs at least {cls.min_classes} classes but student tap is {tuple(student_shape)} "
                    f"and teacher tap is {tuple(teacher_shape)}")
        return problem

    def prepared(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two logit batches the loss reads: standardised when the path asks for it."""
        if self.standardize:
            return standardize(student), standardize(teacher)
        return student, teacher


class SampleLogitDistiller(LogitDistiller):
    """A logit distiller whose loss is the batch mean of a per-sample loss.

    Subclasses implement ``_sample_losses`` on the (possibly standardised) logits; ``forward`` is its mean,
    so the per-sample form and the scalar form cannot drift apart.
    """

    has_sample_losses: ClassVar[bool] = True

    def _sample_losses(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        raise NotImplementedError

    def sample_losses(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self._sample_losses(*self.prepared(student, teacher), ctx)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return self.sample_losses(student, teacher, ctx).mean()
