"""What the per-sample multi-teacher weightings (CA-MKD, EBKD, min_ce) share: each sample splits a weight of 1
among the teachers that have paths, and every path of teacher k becomes a per-sample weighted mean.

For a batch of B samples and the K teachers with paths (spec order), a method gives w in R^{B x K} (rows sum to
1) from the teachers' logits (each teacher's "fc" tap) and, for some methods, the labels. Path p of teacher k
then computes

    L_p = mean_b (K w[b, k] l_p[b])            when its distiller gives per-sample losses l_p (sample_losses)
    L_p = K mean_b(w[b, k]) loss_p             otherwise (relational losses such as RKD do not split by sample)

The factor K makes uniform weights (w = 1/K) give each path exactly its plain value, so configured weights,
the weightings and the charts mean the same thing with and without the method. For a decomposable loss the
second form equals the first with every sample's weight replaced by the batch's mean weight: it keeps a
relational path in the run, weighed by how much its teacher is trusted on the batch as a whole.

The references (Rorozhl/CA-MKD, helper/loops.py and distiller_zoo/CAMKD.py) instead sum w l over teachers and
samples and divide by B K, so there a uniform weighting is 1/K of the plain average; the factor K above is the
deliberate difference. The terms stay ``path:<id>`` at the path's configured weight, so any weighting composes
with the method. The weights are constants: the teachers are frozen and the labels carry no gradient.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from engine.methods.base import PathMethod
from engine.paths.registry import DISTILLERS
from engine.step import PathRoute, StepContext
from engine.vocabulary import LOGITS_SPOT, TEACHER_WEIGHTS_VIEW, TelemetryArray, TelemetryPanel, path_key

if TYPE_CHECKING:
    from engine.step import LearnerView as Learner

MIN_TEACHERS = 2


# ------------------------------------------------------------------ the weights, as functions of (B, K, C) logits
def teacher_cross_entropies(teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, K) cross-entropy of each teacher's logits (B, K, C) with the labels (B,)."""
    batch, teachers, classes = teacher_logits.shape
    flat = F.cross_entropy(teacher_logits.reshape(batch * teachers, classes),
                           labels.repeat_interleave(teachers), reduction="none")
    return flat.reshape(batch, teachers)


def camkd_weights(cross_entropies: torch.Tensor) -> torch.Tensor:
    """CA-MKD's (1 - softmax_k(CE_k)) / (K - 1) per sample: a teacher with the higher CE on a sample gets the
    larger softmax share and so the smaller weight; rows of (B, K) sum to 1."""
    teachers = cross_entropies.shape[1]
    return (1.0 - cross_entropies.softmax(dim=1)) / (teachers - 1)


def prediction_entropies(teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(B, K) entropy of each teacher's softmax(z / T) prediction."""
    log_p = F.log_softmax(teacher_logits / temperature, dim=2)
    return -(log_p.exp() * log_p).sum(dim=2)


def entropy_weights(entropies: torch.Tensor) -> torch.Tensor:
    """EBKD's (1 - H_k / sum_j H_j) / (K - 1) per sample: the less uncertain teacher weighs more; rows sum to 1.
    A sample on which every teacher is certain (all H = 0) is shared equally."""
    teachers = entropies.shape[1]
    total = entropies.sum(dim=1, keepdim=True)
    share = torch.where(total > 0, entropies / total.clamp_min(torch.finfo(entropies.dtype).tiny),
                        torch.full_like(entropies, 1.0 / teachers))
    return (1.0 - share) / (teachers - 1)


def min_ce_weights(cross_entropies: torch.Tensor) -> torch.Tensor:
    """One-hot rows on each sample's lowest-CE teacher (the first of equals)."""
    return F.one_hot(cross_entropies.argmin(dim=1), cross_entropies.shape[1]).to(cross_entropies.dtype)


# ------------------------------------------------------------------ a path under its teacher's weights
def weighted_sample_mean(weights: torch.Tensor, sample_losses: torch.Tensor, teachers: int) -> torch.Tensor:
    """mean_b (K w_b l_b): (B,) weights of one teacher, (B,) losses of one of its paths."""
    return (teachers * weights * sample_losses).mean()


def weighted_batch_loss(weights: torch.Tensor, loss: torch.Tensor, teachers: int) -> torch.Tensor:
    """K mean_b(w_b) loss, for a path whose loss does not split by sample."""
    return teachers * weights.mean() * loss


def teacher_weights_panel(name: str, title: str, caption: str) -> TelemetryPanel:
    """The Teacher importance panel of a per-sample teacher weighting: the (sample x teacher) weights."""
    return TelemetryPanel(
        title=title, caption=caption, view=TEACHER_WEIGHTS_VIEW,
        when="every `telemetry_every` steps while the student trains",
        arrays=(TelemetryArray("weights", f"{name}/teacher_weights", ("sample", "teacher"),
                               "the sample's share of weight on each teacher's paths (rows sum to 1)"),),
    )


class TeacherWeightedMethod(PathMethod):
    """Per-sample teacher weights applied to every path of each teacher (see the module docstring).

    Subclasses set ``name``, ``telemetry`` and ``params_model`` and give ``sample_weights``.
    """

    def __init__(self, path_ids: list[str], path_weights: dict[str, float], distiller_names: dict[str, str],
                 **params: Any) -> None:
        super().__init__(path_ids, path_weights, distiller_names, **params)
        self.teacher_ids: list[str] = []  # set by wanted_spots, spec order
        self.teacher_of_path: dict[str, int] = {}  # path id -> column of its teacher in the weights
        self.per_sample: dict[str, bool] = {}  # path id -> its distiller gives per-sample losses (set by attach)

    def sample_weights(self, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, K) weights, rows summing to 1, from the (B, K, C) teacher logits and the (B,) labels."""
        raise NotImplementedError

    def wanted_spots(self, teacher_ids: list[str], path_spots: dict[str, PathRoute]
                     ) -> tuple[set[str], dict[str, set[str]]]:
        """Every teacher with a path has its logits tapped; fewer than two such teachers leave nothing to weigh."""
        with_paths = {route.teacher for route in path_spots.values()}
        self.teacher_ids = [tid for tid in teacher_ids if tid in with_paths]
        if len(self.teacher_ids) < MIN_TEACHERS:
            raise ValueError(f"{self.name} weighs teachers against each other: paths must come from at least "
                             f"{MIN_TEACHERS} teachers, but they come from {len(self.teacher_ids)} "
                             f"({', '.join(self.teacher_ids) or 'none'})")
        self.teacher_of_path = {pid: self.teacher_ids.index(route.teacher) for pid, route in path_spots.items()}
        return set(), {tid: {LOGITS_SPOT} for tid in self.teacher_ids}

    def attach(self, learner: "Learner") -> None:
        if not self.teacher_ids:
            raise RuntimeError(f"{self.name}: wanted_spots must run before attach (it fixes the teachers)")
        self.per_sample = {pid: DISTILLERS.get(self.distiller_names[pid]).has_sample_losses for pid in self.path_ids}

    def terms(self, learner: "Learner", ctx: StepContext) -> dict[str, torch.Tensor]:
        logits = torch.stack([ctx.teacher_taps[tid][LOGITS_SPOT] for tid in self.teacher_ids], dim=1)
        weights = self.sample_weights(logits.detach().float(), ctx.labels)
        ctx.telemetry.record(self.telemetry.primary.key, weights, ctx.index, columns=self.teacher_ids)
        teachers = len(self.teacher_ids)
        values = {}
        for pid in self.path_ids:
            column = weights[:, self.teacher_of_path[pid]]
            if self.per_sample[pid]:
                losses = learner.path_sample_losses(pid, ctx.student_taps, ctx.teacher_taps, ctx)
                values[path_key(pid)] = weighted_sample_mean(column, losses, teachers)
            else:
                loss = learner.path_loss(pid, ctx.student_taps, ctx.teacher_taps, ctx)
                values[path_key(pid)] = weighted_batch_loss(column, loss, teachers)
        return values
