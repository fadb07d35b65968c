"""AMTML-KD (Liu, Zhang, Wang, Neurocomputing 2020; code FLHonker/AMTML-KD-code): per-instance
teacher importance from learnt teacher latents, a fused soft target, its angle structure, and
multi-group hints (METHODS.md section 2).

Teachers are the run's teachers that have at least one path, in spec order (M of them). Each owns
a latent theta_m in R^C; W in R^{C x 1} is shared; beta(x) is the student's "pool" tap:

    w(x) = softmax_m (beta(x) * theta_m)^T W          q(x) = sum_m w_m(x) softmax(z_tm(x) / T)
    L = (1 - alpha) CE + 2 alpha T^2 KL(q || softmax(z_s/T)) + angle_weight L_angle(z_s, q)
        + hint_weight sum_h L_HT,h + reg_weight (||W||^2 + sum_m ||theta_m||^2)   (reg: stage A only)

How the run's paths map onto these terms:
- logits paths (teacher "fc" -> student "fc", whatever their distiller) are replaced by the fused
  logits term L_F = 2 alpha T^2 KL + angle_weight L_angle. Every logits path reports L_F as its loss
  and w_m / n_m as its weight (w_m: teacher m's batch-mean importance, n_m: its number of logits
  paths), so the weighted logits losses sum to L_F when every teacher has a logits path. L_F enters
  the total once, also when some teacher (or none) has a logits path: AMTML fuses every teacher.
- feature-map paths (both taps (C, H, W)) are replaced by AMTML's hint:
  mean || r(n(F_s)) - n(F_t) ||^2, r a bias-free 1x1 conv, n channel-wise L2 normalisation; it is
  the path's loss, weighted hint_weight.
- other paths (embeddings, stage pairs) keep their own distiller and configured weight.
The task CE is weighted 1 - alpha through ``task_weight``.

Stage A trains theta and W with the student (by its optimizer). With stage_a_epochs > 0 they are
frozen after that many epochs (stage B) and the regulariser is dropped; the same student goes on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from pydantic import Field

from engine.params import Params
from engine.aggregators.registry import AGGREGATORS
from engine.aggregators.base import TASK, Aggregator, path_key
from engine.ops import resize_to, triplet_angles
from engine.step import StepContext
from engine.vocabulary import (
    LOGITS_SPOT, POOL_SPOT, TEACHER_WEIGHTS_VIEW, TelemetryArray, TelemetryPanel,
)

#: the reference's hint regressors start at uniform(-0.005, 0.005): the hint begins as ||n(F_t)||^2
REGRESSOR_INIT = 0.005
#: what the Teacher importance page draws from this aggregator (engine.vocabulary)
TELEMETRY = TelemetryPanel(
    title="AMTML-KD · per-instance teacher weights",
    caption="For each sample the aggregator splits a weight of 1 among the teachers "
            "(w(x) = softmax over teachers); the student learns from that mix of their soft targets.",
    view=TEACHER_WEIGHTS_VIEW,
    when="every `telemetry_every` steps while the student trains",
    arrays=(
        TelemetryArray("weights", "amtml/teacher_weights", ("sample", "teacher"),
                       "the sample's share of weight on each teacher's soft targets (rows sum to 1)"),
        TelemetryArray("norms", "amtml/theta_norm", ("step", "teacher"),
                       "the norm of each teacher's latent vector theta_m (one row per logged step)"),
    ),
)


# ------------------------------------------------------------------ the method's terms, as functions
def teacher_weights(beta: torch.Tensor, theta: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(B, M) per-sample teacher importance softmax_m (beta * theta_m)^T W; beta (B, C) or (B, C, H, W)."""
    if beta.dim() == 4:  # a map as the pooled feature: average it, like the models' own pooling
        beta = beta.mean((2, 3))
    scores = (beta[:, None, :] * theta[None, :, :]) @ w  # (B, M, 1)
    return scores.squeeze(2).softmax(dim=1)


def fused_log_target(weights: torch.Tensor, teacher_logits: list[torch.Tensor], temperature: float
                     ) -> torch.Tensor:
    """log q, q = sum_m w_m softmax(z_tm / T), as a logsumexp so no tiny probability underflows."""
    log_p = torch.stack([F.log_softmax(z / temperature, dim=1) for z in teacher_logits], dim=1)  # (B, M, K)
    return torch.logsumexp(weights.clamp_min(1e-30).log()[:, :, None] + log_p, dim=1)


def fused_kd(student_logits: torch.Tensor, log_q: torch.Tensor, alpha: float, temperature: float) -> torch.Tensor:
    """2 alpha T^2 KL(q || softmax(z_s / T)), averaged over the batch."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    return 2 * alpha * temperature**2 * F.kl_div(log_p_s, log_q, reduction="batchmean", log_target=True)


def angle_loss(student_logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """RKD angle loss of the student's logits against the fused target; like the reference's
    RKdAngle, the target side is a constant (no gradient into theta and W from here)."""
    return F.smooth_l1_loss(triplet_angles(student_logits), triplet_angles(q.detach()))


def hint_loss(regressor: nn.Conv2d, student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """mean || r(n(F_s)) - n(F_t) ||^2 with the student map brought to the teacher's spatial size."""
    student = resize_to(F.normalize(student_map, dim=1), teacher_map.shape[-2:])
    return (regressor(student) - F.normalize(teacher_map, dim=1)).pow(2).mean()


@dataclass
class _StepTerms:
    """What path_losses computes once per step for combine (the fused term enters the total once)."""

    fused: torch.Tensor  # L_F = 2 alpha T^2 KL + angle_weight L_angle
    regulariser: torch.Tensor
    mean_weights: torch.Tensor  # (M,) batch-mean teacher importance


class AMTMLParams(Params):
    alpha: float = Field(0.7, ge=0, le=1, description="share of the fused soft-target term; the task CE weighs 1 - alpha")
    temperature: float = Field(5.0, gt=0, description="softening temperature T of the teachers' and student's logits")
    angle_weight: float = Field(1.0, ge=0, description="weight of the angle-structure loss on the fused target")
    hint_weight: float = Field(1.0, ge=0, description="weight of each feature-map path's hint loss")
    reg_weight: float = Field(0.1, ge=0, description="L2 penalty on the latents theta and W (stage A only)")
    stage_a_epochs: int = Field(0, ge=0, description="epochs before theta and W are frozen (0: never frozen)")
    # theta = W = 0 is a fixed point: no gradient would ever reach them
    init_std: float = Field(0.1, gt=0, description="std of theta and W at the start (the reference: 1)")
    init_seed: int = Field(1, ge=0, description="seed of theta and W's start")


@AGGREGATORS.register("amtml", "AMTML-KD: per-sample teacher weights from learnt latents fuse the teachers' "
                               "soft targets; + angle loss and multi-group hints")
class AMTML(Aggregator):
    telemetry = TELEMETRY

    params_model = AMTMLParams

    def __init__(self, path_ids: list[str], path_weights: dict[str, float], **params: Any) -> None:
        """stage_a_epochs 0: theta and W train for the whole run. init_std: theta and W start as
        N(0, init_std^2) from a generator seeded with init_seed (the reference: seed 1, std 1)."""
        super().__init__(path_ids, path_weights, **params)
        if not path_ids:
            raise ValueError("amtml needs at least one path (its teachers are the teachers with a path)")
        p = self.params
        alpha, temperature, angle_weight, hint_weight = p.alpha, p.temperature, p.angle_weight, p.hint_weight
        reg_weight, stage_a_epochs, init_std, init_seed = p.reg_weight, p.stage_a_epochs, p.init_std, p.init_seed
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.angle_weight, self.hint_weight, self.reg_weight = float(angle_weight), float(hint_weight), float(reg_weight)
        self.stage_a_epochs, self.init_std, self.init_seed = int(stage_a_epochs), float(init_std), int(init_seed)
        self.task_weight = 1.0 - self.alpha
        self.teacher_ids: list[str] = []  # set by wanted_spots, spec order
        self.logits_paths: dict[str, str] = {}  # path id -> teacher id
        self.hint_paths: list[str] = []  # aligned with self.regressors (path ids may contain ".")
        self.regressors = nn.ModuleList()
        self.register_parameter("theta", None)
        self.register_parameter("W", None)
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))  # stage B, saved with checkpoints
        self._step: _StepTerms | None = None

    # ------------------------------------------------------------ set-up
    def wanted_spots(self, teacher_ids, path_spots):
        with_paths = {tid for tid, _, _ in path_spots.values()}
        self.teacher_ids = [tid for tid in teacher_ids if tid in with_paths]
        return {POOL_SPOT, LOGITS_SPOT}, {tid: {LOGITS_SPOT} for tid in self.teacher_ids}

    def attach(self, learner) -> None:
        if not self.teacher_ids:
            raise RuntimeError("amtml: wanted_spots must run before attach (it fixes the teachers)")
        generator = torch.Generator().manual_seed(self.init_seed)
        channels = learner.shapes.student[POOL_SPOT][0]
        self.theta = nn.Parameter(torch.randn(len(self.teacher_ids), channels, generator=generator) * self.init_std)
        self.W = nn.Parameter(torch.randn(channels, 1, generator=generator) * self.init_std)
        for pid in self.path_ids:
            tid, t_spot, s_spot = learner.path_spots[pid]
            if t_spot == LOGITS_SPOT and s_spot == LOGITS_SPOT:
                self.logits_paths[pid] = tid
            elif _is_map(learner.shapes.student.get(s_spot)) and _is_map(learner.shapes.teachers[tid].get(t_spot)):
                self.hint_paths.append(pid)
                self.regressors.append(_regressor(learner.shapes.student[s_spot][0],
                                                  learner.shapes.teachers[tid][t_spot][0], generator))

    def on_epoch_end(self, epoch: int) -> None:
        if self.stage_a_epochs and epoch + 1 >= self.stage_a_epochs:
            self.frozen.fill_(True)
            self._sync_stage()

    def _sync_stage(self) -> None:
        """requires_grad follows the saved stage, so a run resumed in stage B stays frozen."""
        train = not bool(self.frozen)
        for param in (self.theta, self.W):
            param.requires_grad_(train)

    # ------------------------------------------------------------ step
    def path_losses(self, learner, ctx: StepContext) -> dict[str, torch.Tensor]:
        self._sync_stage()
        student_logits = ctx.student_taps[LOGITS_SPOT]
        weights = teacher_weights(ctx.student_taps[POOL_SPOT], self.theta, self.W)
        log_q = fused_log_target(weights, [ctx.teacher_taps[tid][LOGITS_SPOT] for tid in self.teacher_ids],
                                 self.temperature)
        fused = (fused_kd(student_logits, log_q, self.alpha, self.temperature)
                 + self.angle_weight * angle_loss(student_logits, log_q.exp()))
        self._step = _StepTerms(fused, self._regulariser(), weights.detach().mean(0))
        self._record(weights, ctx)
        losses = {}
        for pid in self.path_ids:
            if pid in self.logits_paths:
                losses[path_key(pid)] = fused
            elif pid in self.hint_paths:
                losses[path_key(pid)] = self._hint(learner, pid, ctx)
            else:
                losses[path_key(pid)] = learner.path_loss(pid, ctx.student_taps, ctx.teacher_taps, ctx)
        return losses

    def _regulariser(self) -> torch.Tensor:
        if bool(self.frozen):
            return torch.zeros((), device=self.W.device)
        return self.reg_weight * (self.W.pow(2).sum() + self.theta.pow(2).sum())

    def _hint(self, learner, pid: str, ctx: StepContext) -> torch.Tensor:
        tid, t_spot, s_spot = learner.path_spots[pid]
        regressor = self.regressors[self.hint_paths.index(pid)]
        return hint_loss(regressor, ctx.student_taps[s_spot], ctx.teacher_taps[tid][t_spot])

    def _record(self, weights: torch.Tensor, ctx: StepContext) -> None:
        ctx.telemetry.record(TELEMETRY.array("weights").key, weights, ctx.index, columns=self.teacher_ids)
        ctx.telemetry.record(TELEMETRY.array("norms").key, self.theta.detach().norm(dim=1)[None, :], torch.tensor([-1]),
                             columns=self.teacher_ids)

    def weights(self, losses, ctx) -> dict[str, torch.Tensor]:
        """Logits path of teacher m: w_m / n_m (batch mean); hint paths: hint_weight; others: their own."""
        device = losses[TASK].device
        per_teacher = dict(zip(self.teacher_ids, self._step.mean_weights))
        count = {tid: list(self.logits_paths.values()).count(tid) for tid in self.teacher_ids}
        out = {}
        for pid in self.path_ids:
            if pid in self.logits_paths:
                tid = self.logits_paths[pid]
                out[pid] = per_teacher[tid] / count[tid]
            elif pid in self.hint_paths:
                out[pid] = torch.tensor(self.hint_weight, device=device)
            else:
                out[pid] = torch.tensor(self.path_weights[pid], device=device)
        return out

    def combine(self, losses, ctx) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weights = self.weights(losses, ctx)
        total = self.task_weight * losses[TASK] + self._step.fused + self._step.regulariser
        for pid in self.path_ids:
            if pid not in self.logits_paths:  # the logits paths' share is the fused term, added once
                total = total + weights[pid] * losses[path_key(pid)]
        self._step = None  # the step's graph is not kept past its update
        return total, weights


def _is_map(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 3


def _regressor(student_channels: int, teacher_channels: int, generator: torch.Generator) -> nn.Conv2d:
    conv = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.uniform_(-REGRESSOR_INIT, REGRESSOR_INIT, generator=generator)
    return conv
