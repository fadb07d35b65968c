"""min_ce: each sample follows the one teacher that predicts its label best (the lowest cross-entropy).

The hard limit of confidence weighting (CA-MKD's w with its softmax made an argmax): per sample, weight 1 on
the teacher with the lowest CE_k, 0 on the others (the first teacher in spec order wins a tie). It is the
"best teacher per sample" selection that multi-teacher papers (e.g. CA-MKD, Zhang et al. ICASSP 2022, and the
work it compares with) use as a baseline; no reference implementation is followed. The weights apply to all of
a teacher's paths, weighted as in engine.methods.teacher_confidence (a chosen teacher's path weighs K on that
sample, so with K teachers every sample still carries the plain total weight).
"""
from __future__ import annotations

import torch

from engine.methods.registry import METHODS
from engine.methods.teacher_confidence import (
    TeacherWeightedMethod, min_ce_weights, teacher_cross_entropies, teacher_weights_panel,
)
from engine.params import NoParams

NAME = "min_ce"
TELEMETRY = teacher_weights_panel(
    NAME, "min_ce · the teacher each sample follows",
    "Each sample follows only the teacher with the lowest cross-entropy on its label (weight 1, the others 0).")


@METHODS.register(NAME, "min_ce: each sample follows its lowest-cross-entropy teacher (one-hot per-sample "
                        "teacher weights) on all of that teacher's paths")
class MinCE(TeacherWeightedMethod):
    telemetry = TELEMETRY
    params_model = NoParams
    name = NAME

    def sample_weights(self, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return min_ce_weights(teacher_cross_entropies(teacher_logits, labels))
