"""Verdict logic on synthetic gradient streams: clean, harmful, noisy and late-turning paths."""
from __future__ import annotations

import random

from engine.diagnostics.verdicts import HELPS, HURTS, NEUTRAL, PathEvidence, VerdictRule, judge, t_statistic, update

RULE = VerdictRule()


def _stream(scores: list[float]) -> PathEvidence:
    evidence = PathEvidence()
    for step, score in enumerate(scores):
        update(evidence, step * 10, cos_val=score, cos_task=score, lookahead=-score, rule=RULE)
    return evidence


def _noisy(mean: float, spread: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [mean + rng.uniform(-spread, spread) for _ in range(n)]


def test_a_clean_helpful_path_helps_and_is_never_flagged() -> None:
    evidence = _stream(_noisy(0.5, 0.2, 30, seed=1))
    assert evidence.verdict == HELPS and evidence.first_flagged is None and evidence.confidence > 0.99


def test_a_harmful_path_is_flagged_after_min_probes_with_its_first_step() -> None:
    evidence = _stream(_noisy(-0.4, 0.15, 20, seed=2))
    assert evidence.verdict == HURTS
    assert evidence.first_flagged == (RULE.min_probes - 1) * 10  # as soon as enough probes agree


def test_noise_around_zero_stays_neutral_and_unflagged() -> None:
    for seed in range(20):
        evidence = _stream(_noisy(0.0, 0.15, 40, seed=seed))  # the spread of clean paths on digits
        assert evidence.first_flagged is None, seed
        assert evidence.verdict in (NEUTRAL, HELPS, HURTS)
        assert evidence.verdict == NEUTRAL or abs(sum(evidence.score[-8:]) / 8) >= RULE.margin


def test_small_but_consistent_conflict_below_the_margin_is_neutral() -> None:
    evidence = _stream([-0.08, -0.09, -0.07, -0.08, -0.1, -0.08, -0.09, -0.07])
    assert evidence.verdict == NEUTRAL and evidence.first_flagged is None


def test_a_late_turning_path_is_flagged_when_it_turns_and_keeps_its_first_step() -> None:
    helpful, harmful = _noisy(0.4, 0.1, 15, seed=3), _noisy(-0.5, 0.1, 15, seed=4)
    evidence = _stream(helpful + harmful)
    assert evidence.verdict == HURTS
    assert 150 <= evidence.first_flagged <= 150 + 10 * RULE.window  # within one window of turning
    first = evidence.first_flagged
    for score in _noisy(0.5, 0.1, 10, seed=5):  # recovering clears the verdict, not the history
        update(evidence, 999, score, score, -score, RULE)
    assert evidence.verdict == HELPS and evidence.first_flagged == first


def test_judge_needs_min_probes_and_reports_confidence() -> None:
    assert judge([-0.9, -0.9], RULE) == (NEUTRAL, 0.0)
    verdict, confidence = judge([-0.5, -0.45, -0.55, -0.5], RULE)
    assert verdict == HURTS and confidence > 0.99
    assert t_statistic([1.0]) == 0.0 and t_statistic([0.2, 0.2]) == float("inf")
