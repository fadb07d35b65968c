"""Huang et al., "Knowledge Distillation from A Stronger Teacher" (DIST, NeurIPS 2022).

Matches relations instead of exact probabilities: with y = softmax(z / tau) on both sides,

    L = tau^2 [ beta (1 - mean_i rho(y_s[i, :], y_t[i, :]))      inter-class: each sample's classes
              + gamma (1 - mean_c rho(y_s[:, c], y_t[:, c])) ]    intra-class: each class over the batch

with rho the Pearson correlation. Follows the authors' hunto/image_classification_sota
``lib/models/losses/dist_kd.py`` and its tau-scaled CIFAR form in zkxufo/TTM ``distiller_zoo/dist.py``
(Pearson as a cosine of centred vectors with 1e-8 added to the product of norms). Defaults are the reference
code's beta = gamma = 1 and the CIFAR-100 temperature tau 4 (the ImageNet code uses tau 1), at path weight 1.

The intra-class term correlates each class's column over the whole batch, so the loss does not decompose
into per-sample losses: this distiller has none (``has_sample_losses`` False). Its inter-class term alone
would. With ``standardize`` the logits are z-scored before tau (Sun et al., CVPR 2024).
"""
from __future__ import annotations

import torch
from pydantic import Field

from engine.params import Params
from engine.paths.base import Shape, StepContext
from engine.paths.logit_ops import LogitDistiller, standardize_field
from engine.paths.registry import DISTILLERS

PEARSON_EPS = 1e-8


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D), (N, D) -> (N,): Pearson correlation of each row pair, the reference's eps on the norms."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + PEARSON_EPS)


class DISTParams(Params):
    beta: float = Field(1.0, ge=0, description="weight of the inter-class relation (each sample's classes)")
    gamma: float = Field(1.0, ge=0, description="weight of the intra-class relation (each class over the batch)")
    temperature: float = Field(4.0, gt=0, description="softening temperature tau of both softmaxes")
    standardize: bool = standardize_field()


@DISTILLERS.register("dist", "DIST: Pearson relations of softened predictions, inter- and intra-class (tau 4)")
class DIST(LogitDistiller):
    default_weight = 1.0
    params_model = DISTParams
    min_classes = 2  # a correlation over one class is undefined

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info=None, **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        p = self.params
        self.beta, self.gamma, self.temperature = float(p.beta), float(p.gamma), float(p.temperature)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        student, teacher = self.prepared(student, teacher)
        y_s = torch.softmax(student / self.temperature, dim=1)
        y_t = torch.softmax(teacher / self.temperature, dim=1)
        inter = 1 - pearson_rows(y_s, y_t).mean()
        intra = 1 - pearson_rows(y_s.T, y_t.T).mean()
        return self.temperature**2 * (self.beta * inter + self.gamma * intra)
