"""AMTML-KD (Liu, Zhang, Wang, Neurocomputing 2020; code FLHonker/AMTML-KD-code): per-instance
teacher importance from learnt teacher latents, a fused soft target, its angle structure, and
multi-group hints (METHODS.md section 2).

Teachers are the run's teachers that have at least one path, in spec order (M of them). Each owns
a latent theta_m in R^C; W in R^{C x 1} is shared; beta(x) is the student's "pool" tap:

    w(x) = softmax_m (beta(x) * theta_m)^T W          q(x) = sum_m w_m(x) softmax(z_tm(x) / T)
    L = (1 - alpha) CE + 2 alpha T^2 KL(q || softmax(z_s/T)) + angle_weight L_angle(z_s, q)
        + hint_weight sum_h L_HT,h + reg_weight (||W||^2 + sum_m ||theta_m||^2)   (reg: stage A only)

The terms, and how the run's paths map onto them:
- ``amtml/fused_kd`` (base weight 1) is L_F = 2 alpha T^2 KL + angle_weight L_angle. It stands for every
  logits path (teacher "fc" -> student "fc", whatever its distiller): those paths have no term of their
  own, and L_F enters the total once, also when some teacher (or none) has a logits path: AMTML fuses
  every teacher. Each teacher's batch-mean importance w_m is in the telemetry (amtml/teacher_weights).
- ``amtml/hint:<path id>`` (base weight hint_weight), one per feature-map path (both taps (C, H, W)):
  AMTML's hint mean || r(n(F_s)) - n(F_t) ||^2, r a bias-free 1x1 conv, n channel-wise L2 normalisation.
- ``path:<id>`` (its configured weight): other paths (embeddings, stage pairs) keep their own distiller.
- ``amtml/reg`` (weight 1, never re-weighted): reg_weight (||W||^2 + sum_m ||theta_m||^2), reg_weight
  inside the value; 0 in stage B.
The task CE is weighted 1 - alpha through ``task_weight``. Under the "fixed" weighting the total is the
equation above; another weighting re-weights the fused, hint and other path terms.

Stage A trains theta and W with the student (by its optimizer). With stage_a_epochs > 0 they are
frozen after that many epochs (stage B) and the regulariser is dropped; the same student goes on.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from engine.methods.base import PathMethod
from engine.methods.registry import METHODS
from engine.ops import resize_to, triplet_angles
from engine.params import Params
from engine.step import PathRoute, StepContext
from engine.terms import TermInfo
from engine.vocabulary import (
    LOGITS_SPOT, POOL_SPOT, TEACHER_WEIGHTS_VIEW, TelemetryArray, TelemetryPanel, path_key,
)

if TYPE_CHECKING:
    from engine.step import LearnerView as Learner

#: the reference's hint regressors start at uniform(-0.005, 0.005): the hint begins as ||n(F_t)||^2
REGRESSOR_INIT = 0.005
FUSED_TERM = "amtml/fused_kd"
REG_TERM = "amtml/reg"
HINT_KIND = "amtml/hint"
#: what the Teacher importance page draws from this method (engine.vocabulary)
TELEMETRY = TelemetryPanel(
    title="AMTML-KD · per-instance teacher weights",
    caption="For each sample the method splits a weight of 1 among the teachers "
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


def hint_term(path_id: str) -> str:
    """The name of feature-map path ``path_id``'s hint term."""
    return f"{HINT_KIND}:{path_id}"


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


@METHODS.register("amtml", "AMTML-KD: per-sample teacher weights from learnt latents fuse the teachers' "
                           "soft targets; + angle loss and multi-group hints")
class AMTML(PathMethod):
    telemetry = TELEMETRY
    params_model = AMTMLParams
    name = "amtml"

    def __init__(self, path_ids: list[str], path_weights: dict[str, float], distiller_names: dict[str, str],
                 **params: Any) -> None:
        """stage_a_epochs 0: theta and W train for the whole run. init_std: theta and W start as
        N(0, init_std^2) from a generator seeded with init_seed (the reference: seed 1, std 1)."""
        super().__init__(path_ids, path_weights, distiller_names, **params)
        if not path_ids:
            raise ValueError("amtml needs at least one path (its teachers are the teachers with a path)")
        p = self.params
        self.alpha, self.temperature = float(p.alpha), float(p.temperature)
        self.angle_weight, self.hint_weight, self.reg_weight = float(p.angle_weight), float(p.hint_weight), float(p.reg_weight)
        self.stage_a_epochs, self.init_std, self.init_seed = int(p.stage_a_epochs), float(p.init_std), int(p.init_seed)
        self.task_weight = 1.0 - self.alpha
        self.teacher_ids: list[str] = []  # set by wanted_spots, spec order
        self.logits_paths: dict[str, str] = {}  # path id -> teacher id
        self.hint_paths: list[str] = []  # aligned with self.regressors (path ids may contain ".")
        self.regressors = nn.ModuleList()
        self.register_parameter("theta", None)
        self.register_parameter("W", None)
        self.register_buffer("frozen", torch.zeros((), dtype=torch.bool))  # stage B, saved with checkpoints

    # ------------------------------------------------------------ set-up
    def wanted_spots(self, teacher_ids: list[str], path_spots: dict[str, PathRoute]
                     ) -> tuple[set[str], dict[str, set[str]]]:
        with_paths = {tid for tid, _, _ in path_spots.values()}
        self.teacher_ids = [tid for tid in teacher_ids if tid in with_paths]
        return {POOL_SPOT, LOGITS_SPOT}, {tid: {LOGITS_SPOT} for tid in self.teacher_ids}

    def attach(self, learner: "Learner") -> None:
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

    def term_infos(self, learner: "Learner") -> list[TermInfo]:
        """The fused term (for every logits path), a hint per feature-map path, other paths, the regulariser."""
        infos = [TermInfo(FUSED_TERM, 1.0, kind=FUSED_TERM)]
        for pid in self.path_ids:
            if pid in self.hint_paths:
                infos.append(TermInfo(hint_term(pid), self.hint_weight, path=pid, kind=HINT_KIND))
            elif pid not in self.logits_paths:
                infos.append(self.path_term(pid))
        infos.append(TermInfo(REG_TERM, 1.0, weighable=False, kind=REG_TERM))
        return infos

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
    def terms(self, learner: "Learner", ctx: StepContext) -> dict[str, torch.Tensor]:
        self._sync_stage()
        weights = teacher_weights(ctx.student_taps[POOL_SPOT], self.theta, self.W)
        self._record(weights, ctx)
        values = {FUSED_TERM: self._fused(weights, ctx), REG_TERM: self._regulariser()}
        for pid in self.path_ids:
            if pid in self.hint_paths:
                values[hint_term(pid)] = self._hint(learner, pid, ctx)
            elif pid not in self.logits_paths:
                values[path_key(pid)] = learner.path_loss(pid, ctx.student_taps, ctx.teacher_taps, ctx)
        return values

    def _fused(self, weights: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """L_F = 2 alpha T^2 KL(q || p_s) + angle_weight L_angle, q fused from every teacher's logits."""
        student_logits = ctx.student_taps[LOGITS_SPOT]
        log_q = fused_log_target(weights, [ctx.teacher_taps[tid][LOGITS_SPOT] for tid in self.teacher_ids],
                                 self.temperature)
        return (fused_kd(student_logits, log_q, self.alpha, self.temperature)
                + self.angle_weight * angle_loss(student_logits, log_q.exp()))

    def _regulariser(self) -> torch.Tensor:
        if bool(self.frozen):
            return torch.zeros((), device=self.W.device)
        return self.reg_weight * (self.W.pow(2).sum() + self.theta.pow(2).sum())

    def _hint(self, learner: "Learner", pid: str, ctx: StepContext) -> torch.Tensor:
        tid, t_spot, s_spot = learner.path_spots[pid]
        regressor = self.regressors[self.hint_paths.index(pid)]
        return hint_loss(regressor, ctx.student_taps[s_spot], ctx.teacher_taps[tid][t_spot])

    def _record(self, weights: torch.Tensor, ctx: StepContext) -> None:
        ctx.telemetry.record(TELEMETRY.array("weights").key, weights, ctx.index, columns=self.teacher_ids)
        ctx.telemetry.record(TELEMETRY.array("norms").key, self.theta.detach().norm(dim=1)[None, :], torch.tensor([-1]),
                             columns=self.teacher_ids)


def _is_map(shape: tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 3


def _regressor(student_channels: int, teacher_channels: int, generator: torch.Generator) -> nn.Conv2d:
    conv = nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.uniform_(-REGRESSOR_INIT, REGRESSOR_INIT, generator=generator)
    return conv
