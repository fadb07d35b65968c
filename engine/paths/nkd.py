"""Yang et al., "From Knowledge Distillation to Self-Knowledge Distillation: A Unified Approach with
Normalized Loss and Customized Soft Labels" (NKD, ICCV 2023).

Splits KD into the target class and the non-target classes, and normalises the latter so its size does not
shrink as the teacher grows confident: with y the label, p = softmax(z) and q = softmax over the
non-target classes only, at temperature T,

    L_i = - p_t[i, y] log p_s[i, y]  -  gamma T^2 sum_{c != y} q_t[i, c] log q_s[i, c]

(the teacher's target probability a fixed weight). Follows yzd-v/cls_KD ``mmcls/distillation/losses/nkd.py``
(the version that drops the target column; an earlier commit's mask kept it). Defaults: T 3 and gamma 3.5,
that repository's CIFAR-100 setting (``configs/distillers/cifar100/res34_distill_res18_cifar.py``); its
ImageNet defaults are T 1, gamma 1.5. Path weight 1, as there.

Like the reference, the non-target term is a cross-entropy, not a KL: it differs from KL(q_t || q_s) by the
teacher's entropy, a constant for the student. Decomposes per sample. With ``standardize`` the logits are
z-scored first (Sun et al., CVPR 2024).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from engine.params import Params
from engine.paths.base import Shape, StepContext
from engine.paths.logit_ops import SampleLogitDistiller, drop_target, standardize_field
from engine.paths.registry import DISTILLERS


class NKDParams(Params):
    gamma: float = Field(3.5, ge=0, description="weight of the normalised non-target term")
    temperature: float = Field(3.0, gt=0, description="temperature T of the non-target softmaxes")
    standardize: bool = standardize_field()


@DISTILLERS.register("nkd", "NKD normalized KD: teacher-weighted target CE + gamma T^2 normalised "
                            "non-target CE (gamma 3.5, T 3)")
class NKD(SampleLogitDistiller):
    default_weight = 1.0
    params_model = NKDParams
    min_classes = 2  # the non-target part needs a class besides the target

    def __init__(self, student_shape: Shape, teacher_shape: Shape, info=None, **params) -> None:
        super().__init__(student_shape, teacher_shape, info, **params)
        self.gamma, self.temperature = float(self.params.gamma), float(self.params.temperature)

    def _sample_losses(self, student: torch.Tensor, teacher: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        target = ctx.labels[:, None]
        teacher_target = F.softmax(teacher, dim=1).gather(1, target).squeeze(1).detach()
        target_term = -teacher_target * F.log_softmax(student, dim=1).gather(1, target).squeeze(1)
        t = self.temperature
        q_t = F.softmax(drop_target(teacher, ctx.labels) / t, dim=1)
        log_q_s = F.log_softmax(drop_target(student, ctx.labels) / t, dim=1)
        return target_term - self.gamma * t**2 * (q_t * log_q_s).sum(dim=1)
