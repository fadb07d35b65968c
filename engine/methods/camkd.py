"""CA-MKD: Confidence-Aware Multi-Teacher Knowledge Distillation (Zhang, Chen, Wang, ICASSP 2022; reference code
Rorozhl/CA-MKD, helper/loops.py (the "CAMKD" ensemble of the KD term) and distiller_zoo/CAMKD.py (the same weights
on the intermediate features)).

Per sample, teacher k's weight comes from its cross-entropy with the label, CE_k:

    w_k = (1 - softmax_k(CE_k)) / (K - 1)

so a teacher that is wrong on a sample (high CE) weighs less there than one that is right. The reference computes
softmax over the CE itself (the paper's notation, softmax(L_CE)); softmax_k(-CE_k) would invert the ordering.
Like the reference, the weights apply to each teacher's logit paths and feature paths alike; how a path is
weighted (and the factor K, the deliberate difference from the reference's 1/(B K) sum) is in
engine.methods.teacher_confidence. The reference's learnt feature adapters and its KD/CE mixing are left to the
paths and the weighting.
"""
from __future__ import annotations

import torch

from engine.methods.registry import METHODS
from engine.methods.teacher_confidence import (
    TeacherWeightedMethod, camkd_weights, teacher_cross_entropies, teacher_weights_panel,
)
from engine.params import NoParams

NAME = "camkd"
TELEMETRY = teacher_weights_panel(
    NAME, "CA-MKD · per-sample teacher confidence",
    "For each sample a teacher weighs (1 - softmax of the teachers' cross-entropies with the label) / (K - 1): "
    "teachers that predict the label well on that sample lead its paths.")


@METHODS.register(NAME, "CA-MKD: per-sample teacher weights (1 - softmax_k CE_k) / (K - 1) from each teacher's "
                        "cross-entropy with the label, on all of that teacher's paths")
class CAMKD(TeacherWeightedMethod):
    telemetry = TELEMETRY
    params_model = NoParams
    name = NAME

    def sample_weights(self, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return camkd_weights(teacher_cross_entropies(teacher_logits, labels))
