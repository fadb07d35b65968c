"""Verdict logic on synthetic probe streams: clean, harmful, noisy, over-strong and late-turning paths, and history."""
from __future__ import annotations

import random

from engine.diagnostics.verdicts import (
    HELPS, HURTS, NEUTRAL, PathEvidence, VerdictRule, judge, t_statistic, update)

RULE = VerdictRule()
TASK_EFFECT = -0.01  # the task's own share lowers validation loss by 0.01 nats per step


def _probe(evidence: PathEvidence, step: int, effect: float, score: float, weight: float = 1.0,
           rule: VerdictRule = RULE) -> None:
    update(evidence, step, {"effect": effect, "effect_se": 0.0, "task_effect": TASK_EFFECT, "weight": weight,
                            "cos_val": score, "cos_task": score}, rule)


def _stream(effects: list[float], scores: list[float] | None = None, rule: VerdictRule = RULE) -> PathEvidence:
    """Probes every 10 steps; the cosine score defaults to the effect's direction (harm = against the task)."""
    evidence = PathEvidence()
    scores = scores if scores is not None else [-40 * e for e in effects]
    for step, (effect, score) in enumerate(zip(effects, scores)):
        _probe(evidence, step * 10, effect, score, rule=rule)
    return evidence


def _noisy(mean: float, spread: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [mean + rng.uniform(-spread, spread) for _ in range(n)]


def test_a_clean_helpful_path_helps_and_is_never_flagged() -> None:
    evidence = _stream(_noisy(-0.005, 0.002, 30, seed=1))
    assert evidence.verdict == HELPS and evidence.first_flagged is None and evidence.confidence > 0.99


def test_a_harmful_path_is_flagged_after_min_probes_with_its_first_step() -> None:
    evidence = _stream(_noisy(0.004, 0.0015, 20, seed=2))
    assert evidence.verdict == HURTS
    assert evidence.first_flagged == (RULE.min_probes - 1) * 10  # as soon as enough probes agree


def test_noise_around_zero_is_rarely_flagged() -> None:
    """A path whose effect is pure noise (spread 30% of the task's effect) over 40 probes, 100 seeds."""
    flagged = sum(_stream(_noisy(0.0, 0.003, 40, seed=seed), _noisy(0.0, 0.15, 40, seed=seed + 100)).first_flagged
                  is not None for seed in range(100))
    assert flagged <= 12


def test_an_effect_below_the_margin_is_neutral_whatever_the_geometry_says() -> None:
    """Consistent, but 3% of the task step's effect: too small to matter, even with every cosine opposing."""
    evidence = _stream([0.0003] * 10, scores=[-0.5] * 10)
    assert evidence.cosine_verdict == HURTS
    assert evidence.verdict == NEUTRAL and evidence.first_flagged is None


def test_the_geometry_confirms_a_noisy_harmful_effect_but_never_flags_alone() -> None:
    swinging = [0.03, -0.02, 0.04, -0.01, 0.05, 0.02, -0.02, 0.03]  # mean > 0, t below 3
    assert t_statistic(swinging) < RULE.t_threshold
    assert _stream(swinging, scores=[-0.4] * 8).verdict == HURTS
    assert _stream(swinging, scores=[0.0] * 8).verdict == NEUTRAL
    assert _stream([-0.01] * 8, scores=[-0.4] * 8).verdict == HELPS  # lowers validation loss: not harmful


def test_without_geometry_only_the_effects_own_consistency_confirms() -> None:
    """geometry_confirms off: the swinging effect the cosines would confirm stays neutral (a weak teacher's KD path
    that only makes the student less sure looks like this), a consistent one is still flagged, at the same probe."""
    effects_only = VerdictRule(geometry_confirms=False)
    swinging = [0.03, -0.02, 0.04, -0.01, 0.05, 0.02, -0.02, 0.03]
    assert _stream(swinging, scores=[-0.4] * 8, rule=effects_only).verdict == NEUTRAL
    consistent = _noisy(0.004, 0.0015, 20, seed=2)
    assert _stream(consistent, rule=effects_only).first_flagged == _stream(consistent).first_flagged


def test_an_over_strong_path_pointing_the_right_way_is_flagged() -> None:
    """Magnitude: every cosine says "helps", but its share keeps raising validation loss."""
    evidence = _stream(_noisy(0.02, 0.005, 10, seed=7), scores=[0.6] * 10)
    assert evidence.cosine_verdict == HELPS
    assert evidence.verdict == HURTS


def test_a_late_turning_path_is_flagged_when_it_turns_and_keeps_its_history() -> None:
    evidence = _stream(_noisy(-0.004, 0.001, 15, seed=3) + _noisy(0.005, 0.001, 15, seed=4))
    assert evidence.verdict == HURTS
    assert 150 <= evidence.first_flagged <= 150 + 10 * RULE.window  # within one window of turning
    first = evidence.first_flagged
    for i, effect in enumerate(_noisy(-0.005, 0.001, 10, seed=5)):  # recovering clears the verdict, not the history
        _probe(evidence, 300 + 10 * i, effect, 0.2)
    assert evidence.verdict == HELPS and evidence.first_flagged == first
    verdicts = [verdict for _, verdict in evidence.history]
    assert verdicts[0] == NEUTRAL and HURTS in verdicts and verdicts[-1] == HELPS
    assert evidence.recovered is not None and evidence.recovered > first


def test_silencing_is_recorded_and_explained() -> None:
    evidence = PathEvidence()
    for i in range(12):
        weight = 1.0 if i < 6 else 0.01  # a gate closes after the flag
        _probe(evidence, 10 * i, 0.004, -0.3, weight=weight)
    summary = evidence.summary(RULE)
    assert summary["verdict"] == HURTS and summary["first_flagged_step"] == 30 and summary["silenced_step"] == 60
    assert summary["history"] == [[0, NEUTRAL], [30, HURTS]]
    assert summary["explanation"].startswith("raises validation loss by 0.004 per step (8 of 8 recent probes")
    assert "first flagged at step 30, silenced at step 60" in summary["explanation"]


def test_the_explanation_says_what_confirms_the_verdict() -> None:
    consistent = _stream([0.004] * 8).summary(RULE)
    assert consistent["confirmed_by"] == "effects" and "consistent over the recent probes" in consistent["explanation"]
    swinging = _stream([0.03, -0.02, 0.04, -0.01, 0.05, 0.02, -0.02, 0.03], scores=[-0.4] * 8).summary(RULE)
    assert swinging["confirmed_by"] == "geometry"
    assert "confirmed by the gradient geometry" in swinging["explanation"]
    # Flagged on consistent effects, then they swing with the cosines neutral: the flag is held by its mean alone.
    held = _stream([0.004] * 8 + [0.03, -0.02, 0.04, -0.01, 0.05, 0.02, -0.02, 0.03], scores=[0.0] * 16)
    assert held.verdict == HURTS and held.confirmed_by(RULE) == "held"
    assert _stream([0.0] * 8).summary(RULE)["confirmed_by"] is None
    # The cosines agree, but this rule does not let them confirm: a flag they would carry is "held".
    effects_only = VerdictRule(geometry_confirms=False)
    held_alone = _stream([0.004] * 8 + [0.03, -0.02, 0.04, -0.01, 0.05, 0.02, -0.02, 0.03], scores=[-0.4] * 16,
                         rule=effects_only)
    assert held_alone.cosine_verdict == HURTS and held_alone.confirmed_by(effects_only) == "held"


def test_a_checkpoint_of_another_version_loads_its_known_fields() -> None:
    old = {"score": [0.1], "cos_val": [0.1], "cos_task": [0.1], "lookahead": [0.0], "steps": [0],
           "verdict": NEUTRAL, "confidence": 0.0, "first_flagged": None}
    evidence = PathEvidence.from_state(old)
    assert evidence.steps == [0] and evidence.history == []


def test_judge_needs_min_probes_and_reports_confidence() -> None:
    assert judge([-0.9, -0.9], RULE) == (NEUTRAL, 0.0)
    verdict, confidence = judge([-0.5, -0.45, -0.55, -0.5], RULE)
    assert verdict == HURTS and confidence > 0.99
    assert t_statistic([1.0]) == 0.0 and t_statistic([0.2, 0.2]) == float("inf")
