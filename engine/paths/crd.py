"""Tian et al. 2020, contrastive representation distillation.

Both taps go through a linear head to 128-d unit vectors. Each side keeps a memory bank holding one
slowly updated vector per sample id; negatives for a sample are K other ids' entries of the *other*
side's bank. Loss: we use the contrastive softmax (InfoNCE) over 1 positive + K negatives at
temperature tau, rather than RepDistiller's NCE with its estimated partition constant: it is
simpler and has no constant to estimate. As in CRD both directions are summed: student anchor vs
teacher bank, and teacher anchor vs student bank. The positive is the other side's *current*
embedding of the same sample (the reference reads it from the bank, one update behind).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from pydantic import Field

from engine.params import Params
from engine.paths.registry import DISTILLERS
from engine.paths.base import DataInfo, Distiller, Shape, StepContext


def contrastive_loss(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    """anchor, positive (B, D); negatives (B, K, D): cross-entropy of the positive among K + 1 scores."""
    pos = (anchor * positive).sum(1, keepdim=True)
    neg = torch.bmm(negatives, anchor.unsqueeze(2)).squeeze(2)
    scores = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(scores, torch.zeros(len(anchor), dtype=torch.long, device=anchor.device))


def _random_unit_rows(rows: int, dim: int) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim), dim=1)


class CRDParams(Params):
    feat_dim: int = Field(128, ge=1, description="width of the embedding both taps are projected to")
    nce_k: int = Field(16384, ge=1, description="negatives per sample (at most the sample count - 1)")
    temperature: float = Field(0.07, gt=0, description="temperature tau of the contrastive softmax")
    momentum: float = Field(0.5, ge=0, lt=1, description="how much of a memory-bank entry each update keeps")
    seed: int = Field(0, description="seed of the negatives' draw and the banks' start")


@DISTILLERS.register("crd", "CRD contrastive: InfoNCE on 128-d embeddings vs memory-bank negatives (tau 0.07, weight 0.8)")
class CRD(Distiller):
    accepts = ("embedding", "feature_map")
    default_weight = 0.8
    params_model = CRDParams

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info: DataInfo | None = None,
                 **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        if info is None:
            raise ValueError("crd needs the data's sample count to size its memory banks, but info is None")
        p = self.params
        feat_dim, nce_k, temperature, momentum, seed = p.feat_dim, p.nce_k, p.temperature, p.momentum, p.seed
        self.embed_s = nn.Linear(math.prod(student_shape), feat_dim)
        self.embed_t = nn.Linear(math.prod(teacher_shape), feat_dim)
        # A sample is never its own negative, so at most num_samples - 1 distinct ids are left.
        self.num_negatives = min(int(nce_k), info.num_samples - 1)
        self.temperature, self.momentum, self.seed = float(temperature), float(momentum), int(seed)
        self.register_buffer("bank_s", _random_unit_rows(info.num_samples, feat_dim))
        self.register_buffer("bank_t", _random_unit_rows(info.num_samples, feat_dim))

    @classmethod
    def shape_problem(cls, student_shape: Shape, teacher_shape: Shape) -> str | None:
        return None  # the linear heads take any widths (maps are flattened)

    def draw_negatives(self, index: torch.Tensor, step: int) -> torch.Tensor:
        """(B, K) ids drawn uniformly among the other samples. Seeded by the step, so a resumed run
        draws the same negatives and the global RNG is left alone."""
        generator = torch.Generator(device=index.device).manual_seed(self.seed * 1_000_003 + step)
        ids = torch.randint(0, self.bank_s.shape[0] - 1, (len(index), self.num_negatives),
                            generator=generator, device=index.device)
        return ids + (ids >= index[:, None]).long()  # skip over the anchor's own id

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        s = F.normalize(self.embed_s(student.flatten(1)), dim=1)
        t = F.normalize(self.embed_t(teacher.flatten(1)), dim=1)
        index = ctx.index.to(self.bank_s.device)
        negatives = self.draw_negatives(index, ctx.step)
        loss = (contrastive_loss(s, t, self.bank_t[negatives], self.temperature)
                + contrastive_loss(t, s, self.bank_s[negatives], self.temperature))
        if self.training:  # evaluation must not move the banks
            self._update_banks(index, s, t)
        return loss

    @torch.no_grad()
    def _update_banks(self, index: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> None:
        for bank, fresh in ((self.bank_s, s), (self.bank_t, t)):
            mixed = self.momentum * bank[index] + (1 - self.momentum) * fresh
            bank.index_copy_(0, index, F.normalize(mixed, dim=1))
