"""Turn a stream of per-path probe measurements into a verdict: helps, neutral or hurts.

The evidence is a path's agreement score: the mean of the cosine between its gradient and
the task gradient on the same batch and the cosine with the task gradient on a held-out
(validation) batch. A path whose gradient points against both fights what the student is
trained for and raises validation loss to first order. (The held-out cosine alone is slow:
early on it is noisy for every path, while a harmful teacher already opposes the batch's own
task gradient.) Single probes are noisy, so a verdict needs the mean score over a window of
recent probes to be both large and consistent (a t-statistic); the first probe step at
which a path was judged to hurt is kept as its first-flag step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.vocabulary import HELPS, HURTS, NEUTRAL, VERDICT_CODE  # noqa: F401  (ablation and the pages read them here)


@dataclass(frozen=True)
class VerdictRule:
    window: int = 8  # probes the verdict looks back over
    min_probes: int = 4  # no verdict other than neutral before this many probes
    margin: float = 0.15  # |mean score| below this is neutral however consistent
    t_threshold: float = 3.0  # how many standard errors the mean must be away from zero


@dataclass
class PathEvidence:
    """Everything measured for one path, and its running verdict."""

    score: list[float] = field(default_factory=list)
    cos_val: list[float] = field(default_factory=list)
    cos_task: list[float] = field(default_factory=list)
    lookahead: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    verdict: str = NEUTRAL
    confidence: float = 0.0
    first_flagged: int | None = None

    def summary(self, rule: VerdictRule) -> dict[str, float | int | str | None]:
        recent = slice(-rule.window, None)
        return {"verdict": self.verdict, "confidence": round(self.confidence, 3),
                "first_flagged_step": self.first_flagged, "probes": len(self.steps),
                "mean_score": _mean(self.score[recent]),
                "mean_cos_val": _mean(self.cos_val[recent]), "mean_cos_task": _mean(self.cos_task[recent]),
                "mean_lookahead": _mean(self.lookahead[recent])}


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


def judge(values: list[float], rule: VerdictRule) -> tuple[str, float]:
    """(verdict, confidence in [0, 1]) from the recent agreement scores of one path."""
    recent = values[-rule.window:]
    if len(recent) < rule.min_probes:
        return NEUTRAL, 0.0
    mean, t = _mean(recent), t_statistic(recent)
    # Confidence: the normal-approximation probability that the mean's sign is right.
    confidence = 0.5 * (1 + math.erf(abs(t) / math.sqrt(2))) if math.isfinite(t) else 1.0
    if mean <= -rule.margin and t <= -rule.t_threshold:
        return HURTS, confidence
    if mean >= rule.margin and t >= rule.t_threshold:
        return HELPS, confidence
    return NEUTRAL, confidence


def update(evidence: PathEvidence, step: int, cos_val: float, cos_task: float, lookahead: float,
           rule: VerdictRule) -> None:
    """Add one probe's measurements and re-judge the path."""
    evidence.steps.append(step)
    evidence.score.append((cos_val + cos_task) / 2)
    evidence.cos_val.append(cos_val)
    evidence.cos_task.append(cos_task)
    evidence.lookahead.append(lookahead)
    evidence.verdict, evidence.confidence = judge(evidence.score, rule)
    if evidence.verdict == HURTS and evidence.first_flagged is None:
        evidence.first_flagged = step
