"""Peng et al. 2019, correlation congruence. Two forms, chosen by ``form``:

``correlation`` (default; RepDistiller's, HobbitLong/RepDistiller, distiller_zoo/CC.py with its set-up in
train_student.py): both taps are flattened and projected by learnable linear embeddings (RepDistiller's
LinearEmbed, feat_dim 128; both train with the student), then with d_i = |e_s(x_i) - e_t(x_i)|

    loss = mean_i sum_k d_i[k] d_{i+1}[k]            over consecutive samples i, i+1 of the batch

at RepDistiller's weight 0.02, with no deliberate difference from the reference.

``kernel`` (PathScope's form before issue 13, after the paper's equations): MSE between the B x B
correlation matrices of the two sides, each a P-order Taylor expansion of a Gaussian RBF kernel on
L2-normalised, flattened taps,

    k(a, b) = exp(-gamma ||a - b||^2) = exp(-2 gamma) exp(2 gamma a.b)
            ~ sum_{p<=P} exp(-2 gamma) (2 gamma)^p / p! (a.b)^p        (unit a, b; gamma 0.4, P 2)

Its loss is about 1/17,000 of the correlation form's, so it gets its own conventional weight, KERNEL_WEIGHT,
chosen so that weight x loss matches the correlation form's at 0.02 on real embeddings: the pooled 64-d
embeddings of the akamaster CIFAR-10 checkpoints resnet56 (teacher) and resnet20 (student) on 10 batches
of 64 images of ../shared/data/cifar10-jpg/test, 5 embedding initialisations each, give a median ratio
correlation / kernel of 1.70e4 (range 1.35e4 to 2.26e4), so 0.02 x 1.70e4 = 340. (With an untrained
resnet20 student, as at the start of a run, the ratio is about 9.7e4: the kernel form then weighs less.)
Both forms are relational (a sample's term involves its neighbours), so neither gives per-sample losses.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from engine.params import Params
from engine.paths.registry import DISTILLERS
from engine.paths.base import Distiller, Shape, StepContext

#: the kernel form's conventional weight (see the module docstring for how it was measured)
KERNEL_WEIGHT = 340.0


def consecutive_difference_correlation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RepDistiller's CC loss on two (B, D) embeddings: mean over i of <|s_i - t_i|, |s_{i+1} - t_{i+1}|>."""
    gap = (student - teacher).abs()
    return (gap[:-1] * gap[1:]).sum(1).mean()


def taylor_rbf_correlation(x: torch.Tensor, gamma: float, order: int) -> torch.Tensor:
    """(B, B): the Taylor-expanded Gaussian kernel between the unit-length, flattened rows of x."""
    unit = F.normalize(x.flatten(1), dim=1)
    cosine = unit @ unit.T
    return sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * cosine.pow(p)
               for p in range(order + 1))


class CCParams(Params):
    form: Literal["correlation", "kernel"] = Field(
        "correlation", description=("correlation: RepDistiller's consecutive-sample form on learnable embeddings "
                                    "(weight 0.02); kernel: Taylor-expanded Gaussian-kernel matrices "
                                    f"(weight {KERNEL_WEIGHT:g})"))
    embed_dim: int = Field(128, ge=1, description="correlation form: width of the learnable embeddings of both taps")
    gamma: float = Field(0.4, gt=0, description="kernel form: the Gaussian kernel's gamma")
    order: int = Field(2, ge=1, description="kernel form: order of the kernel's Taylor expansion")


@DISTILLERS.register("cc", "CC correlation congruence: RepDistiller's consecutive-sample correlation of embedding gaps "
                           "(weight 0.02), or the Gaussian-kernel form")
class CC(Distiller):
    accepts = ("embedding", "logits", "feature_map")
    default_weight = 0.02
    params_model = CCParams

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info=None, **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        if self.params.form == "correlation":
            self.embed_s = nn.Linear(math.prod(student_shape), self.params.embed_dim)
            self.embed_t = nn.Linear(math.prod(teacher_shape), self.params.embed_dim)

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        return None  # both forms flatten the taps, and neither compares them element by element unembedded

    def conventional_weight(self) -> float:
        return KERNEL_WEIGHT if self.params.form == "kernel" else self.default_weight

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        if self.params.form == "kernel":
            gamma, order = self.params.gamma, self.params.order
            return F.mse_loss(taylor_rbf_correlation(student, gamma, order),
                              taylor_rbf_correlation(teacher, gamma, order))
        return consecutive_difference_correlation(self.embed_s(student.flatten(1)), self.embed_t(teacher.flatten(1)))
