"""Turn a stream of per-path probe measurements into a verdict (helps, neutral, hurts) and its history.

The verdict rests on the measured effect (engine/diagnostics/effect.py): the change of validation loss
caused by the path's own share of a real update, in nats per step. Over a window of recent probes a
path hurts when its mean effect raises validation loss by more than ``effect_margin`` times the task's
own effect (the reference: what one step of plain training does), and the effect's sign is confirmed,
by its consistency across the probes or (unless ``geometry_confirms`` is off) by the gradient geometry
(``judge_effect``). Helps is the mirror image. Effects are measured on held-out data, so an over-strong
push, or a feature path that carries no label, is judged by what it does to the student rather than by
the direction it points. A path that only lowers the student's confidence does raise held-out
cross-entropy (the detector bench's weak and label-noise teachers: 0.3-3x a task step's effect, at no
measurable cost in accuracy); the geometry confirms those quickly, the effects alone less often.

The cosine score of earlier PathScope versions (the mean of the path gradient's cosines with the task
gradient on the batch and on a validation batch) is still measured and judged with its own rule; it is
kept as evidence and as ``cosine_verdict``, so a run can be scored under both detectors.

History: every change of verdict is kept as (step, verdict), with the first flag, the first probe after it
at which the path's weight had fallen below ``SILENCED_SHARE`` of its weight when first flagged, and the
probe from which it is no longer judged harmful (cleared if it is flagged again). ``explain`` says it in one sentence.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from engine.vocabulary import HELPS, HURTS, NEUTRAL, VERDICT_CODE  # noqa: F401  (ablation and the pages read them here)

MAJORITY = 0.75  # share of a window's probes that must lie on the mean's side for the effects to confirm alone
SILENCED_SHARE = 0.05  # a flagged path counts as silenced once its weight is under 5% of its weight when flagged


@dataclass(frozen=True)
class VerdictRule:
    window: int = 8  # probes the verdict looks back over
    min_probes: int = 4  # no verdict other than neutral before this many probes
    # How many standard errors the mean effect must be from zero to confirm its sign on its own. 4 rather than
    # the textbook 3: the test is repeated at every probe, and with 3 a pure-noise path (mean 0, spread 30% of
    # the task's effect) was flagged at some point in 21% of 40-probe runs, with 4 in 10% (tests/test_verdicts.py).
    t_threshold: float = 4.0
    effect_margin: float = 0.05  # |mean effect| below this share of the task's |effect| is neutral
    # Whether the cosine detector's verdict may confirm the effect's sign (fast first flags) or only the effects'
    # own consistency may (no flag from a pure confidence change that the geometry reads as opposition, later flags).
    geometry_confirms: bool = True
    margin: float = 0.15  # the cosine score's neutral band (the cosine detector, kept as evidence)
    cosine_t_threshold: float = 3.0  # the cosine detector's t threshold


def rule_from(settings: Any) -> VerdictRule:
    """The rule a spec's diagnostics settings (engine.spec.DiagnosticsSpec) ask for: the engine judges with it and
    the pages replay logged probes with it."""
    return VerdictRule(window=settings.window, t_threshold=settings.t_threshold, effect_margin=settings.effect_margin,
                       margin=settings.margin, geometry_confirms=settings.geometry_confirms)


@dataclass
class PathEvidence:
    """Everything measured for one path, its running verdict and the verdict's history."""

    steps: list[int] = field(default_factory=list)
    effect: list[float] = field(default_factory=list)  # Δ validation loss from the path's share (nats)
    effect_se: list[float] = field(default_factory=list)  # its standard error over the held-out chunks
    task_effect: list[float] = field(default_factory=list)  # the task's own share, for scale
    weight: list[float] = field(default_factory=list)  # the path's weight in the step it was probed at
    score: list[float] = field(default_factory=list)  # cosine score: mean of the two cosines
    cos_val: list[float] = field(default_factory=list)
    cos_task: list[float] = field(default_factory=list)
    verdict: str = NEUTRAL
    confidence: float = 0.0
    first_flagged: int | None = None
    silenced: int | None = None
    recovered: int | None = None
    flagged_weight: float | None = None  # the path's weight when first flagged (silenced is relative to it)
    history: list[list] = field(default_factory=list)  # [step, verdict] at every change, the first included
    cosine_verdict: str = NEUTRAL
    cosine_first_flagged: int | None = None

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "PathEvidence":
        """Rebuild from ``vars()`` of a checkpointed one; fields of another PathScope version are dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in state.items() if name in known})

    def summary(self, rule: VerdictRule) -> dict[str, Any]:
        recent = slice(-rule.window, None)
        effects = self.effect[recent]
        out = {"verdict": self.verdict, "confidence": round(self.confidence, 3),
               "first_flagged_step": self.first_flagged, "silenced_step": self.silenced,
               "recovered_step": self.recovered, "probes": len(self.steps), "recent_probes": len(effects),
               "raising_probes": sum(e > 0 for e in effects), "mean_effect": _mean(effects),
               "mean_effect_se": _mean(self.effect_se[recent]), "mean_task_effect": _mean(self.task_effect[recent]),
               "task_step_size": _mean([abs(e) for e in self.task_effect[recent]]),
               "mean_score": _mean(self.score[recent]), "mean_cos_val": _mean(self.cos_val[recent]),
               "mean_cos_task": _mean(self.cos_task[recent]), "cosine_verdict": self.cosine_verdict,
               "cosine_first_flagged_step": self.cosine_first_flagged, "history": [list(h) for h in self.history],
               "confirmed_by": self.confirmed_by(rule)}
        out["explanation"] = explain(out, rule)
        return out

    def confirmed_by(self, rule: VerdictRule) -> str | None:
        """What confirms a helps or hurts verdict now (None when neutral): "effects" (their own consistency over the
        window), "geometry" (the cosine detector agreeing) or "held" (kept while its mean stays beyond the band).
        It mirrors ``judge_effect`` under the rule that gave the verdict; asked under another rule (or of evidence
        restored from another version) it can call "held" what that rule confirmed otherwise."""
        if self.verdict == NEUTRAL:
            return None
        recent = self.effect[-rule.window:]
        if _consistent(recent, rule.t_threshold, harm=self.verdict == HURTS):
            return "effects"
        return "geometry" if rule.geometry_confirms and self.cosine_verdict == self.verdict else "held"


CONFIRMATION = {"effects": "consistent over the recent probes", "geometry": "confirmed by the gradient geometry",
                "held": "held since it was confirmed, the mean still beyond the band"}


def _consistent(effects: list[float], t_threshold: float, harm: bool) -> bool:
    """A large t of the right sign and most probes on the mean's side (t alone trusts a few large values)."""
    t = t_statistic(effects)
    raising = sum(e > 0 for e in effects) / len(effects) if effects else 0.0
    if harm:
        return t >= t_threshold and raising >= MAJORITY
    return t <= -t_threshold and 1 - raising >= MAJORITY


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def t_statistic(values: list[float]) -> float:
    """Mean over its standard error (0 for fewer than two values); large |t| = a consistent sign."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = _mean(values)
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    if variance == 0.0:
        return math.copysign(math.inf, mean) if mean else 0.0
    return mean / math.sqrt(variance / n)


def _confidence(t: float) -> float:
    """The normal-approximation probability that the mean's sign is right."""
    return 0.5 * (1 + math.erf(abs(t) / math.sqrt(2))) if math.isfinite(t) else 1.0


def judge_effect(effects: list[float], task_effects: list[float], geometry: tuple[str, float], rule: VerdictRule,
                 previous: str = NEUTRAL) -> tuple[str, float]:
    """(verdict, confidence in [0, 1]) from the recent effects of one path (> 0 raises validation loss).

    The mean effect decides the direction and whether it matters (beyond ``effect_margin`` x the task's
    own effect). Its sign must then be confirmed: by the effects' own consistency across probes (a
    t-statistic), or by the gradient geometry agreeing (``geometry``: the cosine rule's verdict and
    confidence). Early in training single effects swing with the student (on digits, a label-permuted
    teacher's share lowered validation loss at 3 of its first 8 probes while raising it 6x as much at the
    others), so the effects alone confirm a flag late; the geometry confirms a direction quickly but
    cannot see magnitude, labels-free feature paths or confidence, so it never flags on its own. With
    ``rule.geometry_confirms`` off only the effects confirm: a path that only makes the student less sure (which
    the geometry reads as opposing the task) is then left alone, and true flags come later.
    A verdict, once confirmed, holds while the mean effect stays beyond the band on its side: a
    silenced harmful path is no longer dragged along by the student, so its geometry fades and single
    effects swing, yet its mean effect keeps saying what it would do if it were given its weight back.
    """
    recent = effects[-rule.window:]
    if len(recent) < rule.min_probes:
        return NEUTRAL, 0.0
    mean, t = _mean(recent), t_statistic(recent)
    band = rule.effect_margin * _mean([abs(e) for e in task_effects[-rule.window:]])
    confidence = _confidence(t)
    geometry_verdict, geometry_confidence = geometry if rule.geometry_confirms else (NEUTRAL, 0.0)
    consistent_harm = _consistent(recent, rule.t_threshold, harm=True)
    consistent_help = _consistent(recent, rule.t_threshold, harm=False)
    if mean > band and (consistent_harm or HURTS in (geometry_verdict, previous)):
        return HURTS, max(confidence, geometry_confidence if geometry_verdict == HURTS else 0.0)
    if mean < -band and (consistent_help or HELPS in (geometry_verdict, previous)):
        return HELPS, max(confidence, geometry_confidence if geometry_verdict == HELPS else 0.0)
    return NEUTRAL, confidence


def judge(values: list[float], rule: VerdictRule) -> tuple[str, float]:
    """(verdict, confidence) from the recent cosine scores of one path: the cosine detector."""
    recent = values[-rule.window:]
    if len(recent) < rule.min_probes:
        return NEUTRAL, 0.0
    mean, t = _mean(recent), t_statistic(recent)
    if mean <= -rule.margin and t <= -rule.cosine_t_threshold:
        return HURTS, _confidence(t)
    if mean >= rule.margin and t >= rule.cosine_t_threshold:
        return HELPS, _confidence(t)
    return NEUTRAL, _confidence(t)


def update(evidence: PathEvidence, step: int, measured: dict[str, float], rule: VerdictRule) -> None:
    """Add one probe's measurements (effect, effect_se, task_effect, weight, cos_val, cos_task); re-judge."""
    evidence.steps.append(step)
    for name in ("effect", "effect_se", "task_effect", "weight", "cos_val", "cos_task"):
        getattr(evidence, name).append(float(measured[name]))
    evidence.score.append((measured["cos_val"] + measured["cos_task"]) / 2)
    before = evidence.verdict
    geometry = judge(evidence.score, rule)
    evidence.cosine_verdict = geometry[0]
    evidence.verdict, evidence.confidence = judge_effect(evidence.effect, evidence.task_effect, geometry, rule,
                                                          before)
    if evidence.cosine_verdict == HURTS and evidence.cosine_first_flagged is None:
        evidence.cosine_first_flagged = step
    _track_history(evidence, step, before)


def _track_history(evidence: PathEvidence, step: int, before: str) -> None:
    if not evidence.history or evidence.verdict != before:
        evidence.history.append([step, evidence.verdict])
    if evidence.verdict == HURTS:
        if evidence.first_flagged is None:
            evidence.first_flagged, evidence.flagged_weight = step, evidence.weight[-1]
        evidence.recovered = None  # flagged (again): it has not recovered
    elif before == HURTS:
        evidence.recovered = step
    # Silenced: the first probe since the first flag at which the weight is a sliver of what it was then.
    if evidence.flagged_weight is not None and evidence.silenced is None:
        if abs(evidence.weight[-1]) <= SILENCED_SHARE * abs(evidence.flagged_weight):
            evidence.silenced = step


def explain(summary: dict[str, Any], rule: VerdictRule) -> str:
    """One sentence on why the path has its verdict, e.g. "raises validation loss by 0.031 per step ..."."""
    probes, recent = summary["probes"], summary["recent_probes"]
    if probes < rule.min_probes:
        return f"not judged yet: {probes} of the {rule.min_probes} probes a verdict needs"
    effect, raising = summary["mean_effect"], summary["raising_probes"]
    direction = "raises" if effect > 0 else "lowers"
    task = summary["task_step_size"]  # the mean |effect| of the task's own share: what a plain step does
    scale = f", {abs(effect) / task:.2g}x the size of the task step's effect" if task > 0 else ""
    sentence = (f"{direction} validation loss by {abs(effect):.2g} per step ({raising} of {recent} recent probes "
                f"raise it{scale})")
    if summary["verdict"] == NEUTRAL:
        sentence += f": within ±{rule.effect_margin:g}x the task's effect or not consistent enough, so neutral"
    elif summary.get("confirmed_by"):
        sentence += f"; {CONFIRMATION[summary['confirmed_by']]}"
    return sentence + _history_clause(summary)


def _history_clause(summary: dict[str, Any]) -> str:
    parts = []
    if summary["first_flagged_step"] is not None:
        parts.append(f"first flagged at step {summary['first_flagged_step']}")
    if summary["silenced_step"] is not None:
        parts.append(f"silenced at step {summary['silenced_step']}")
    if summary["recovered_step"] is not None:
        parts.append(f"no longer hurting from step {summary['recovered_step']}")
    return "; " + ", ".join(parts) if parts else ""
