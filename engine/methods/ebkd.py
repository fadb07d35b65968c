"""EBKD: entropy-based multi-teacher weighting (Kwon, Na, Lee, Kim, "Adaptive Knowledge Distillation Based on
Entropy", ICASSP 2020), in the multi-teacher form the CA-MKD paper compares against (reference code
Rorozhl/CA-MKD, helper/loops.py, the "EBKD" ensemble).

Label-free: per sample, teacher k's weight comes from the entropy H_k of its prediction softmax(z_k / T):

    w_k = (1 - H_k / sum_j H_j) / (K - 1)

so the more certain teacher weighs more. The reference uses T = 1 and weights 1 - H_k / sum_j H_j, which sum to
K - 1; dividing by K - 1 makes each sample's weights sum to 1 (the same ratios; the deliberate difference, like the
factor K of engine.methods.teacher_confidence, keeps uniform weights equal to the plain paths). A sample on which
every teacher is certain (all entropies 0) is shared equally. The weights apply to all of a teacher's paths.
"""
from __future__ import annotations

import torch
from pydantic import Field

from engine.methods.registry import METHODS
from engine.methods.teacher_confidence import (
    TeacherWeightedMethod, entropy_weights, prediction_entropies, teacher_weights_panel,
)
from engine.params import Params

NAME = "ebkd"
TELEMETRY = teacher_weights_panel(
    NAME, "EBKD · per-sample teacher certainty",
    "For each sample a teacher weighs (1 - its prediction entropy / the teachers' summed entropy) / (K - 1): "
    "the more certain teacher leads that sample's paths. No label is read.")


class EBKDParams(Params):
    temperature: float = Field(1.0, gt=0, description="temperature T of the teachers' softmax whose entropy is "
                                                      "measured (the reference: 1)")


@METHODS.register(NAME, "EBKD: per-sample teacher weights (1 - H_k / sum_j H_j) / (K - 1) from the entropies of "
                        "the teachers' predictions (label-free), on all of that teacher's paths")
class EBKD(TeacherWeightedMethod):
    telemetry = TELEMETRY
    params_model = EBKDParams
    name = NAME

    def sample_weights(self, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` is unused: EBKD is label-free."""
        return entropy_weights(prediction_entropies(teacher_logits, float(self.params.temperature)))
