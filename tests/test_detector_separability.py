"""The detector bench's separability table (bench/detector_separability.py) on hand-made results: how far the best
rule on one probe measure could go."""
from __future__ import annotations

import pytest

from bench.detector import Scenario
from bench.detector_separability import auc, best_threshold, path_scores, run_score, separability_table


def test_auc_is_the_chance_a_harmful_path_outscores_a_harmless_one() -> None:
    assert auc([(True, 3.0), (True, 2.0), (False, 1.0), (False, 0.0)]) == 1.0
    assert auc([(True, 0.0), (False, 1.0)]) == 0.0
    assert auc([(True, 1.0), (False, 1.0)]) == 0.5  # a tie counts half
    assert auc([(True, 2.0), (True, 0.0), (False, 1.0)]) == 0.5
    assert auc([(False, 1.0)]) is None


def test_the_best_threshold_maximises_the_smaller_of_precision_and_recall() -> None:
    rows = [(True, 5.0), (False, 4.0), (True, 3.0), (False, 2.0), (False, 1.0)]
    best = best_threshold(rows)
    assert best == {"threshold": 3.0, "precision": pytest.approx(2 / 3), "recall": 1.0}
    assert best_threshold([(False, 1.0)]) is None


def _probes(effects: list[float], cos_val: list[float]) -> dict:
    return {"diag/effect:bad-kd-fc": [[4 * i, e] for i, e in enumerate(effects)],
            "diag/cos_val:bad-kd-fc": [[4 * i, c] for i, c in enumerate(cos_val)]}


def test_a_runs_score_summarises_the_second_half_of_its_probes() -> None:
    run = {"probes": _probes([-9.0, -9.0, 1.0, 3.0], [0.9, 0.9, -0.2, -0.4])}
    assert run_score(run, "bad-kd-fc", "effect (mean, nats a step)") == pytest.approx(2.0)
    assert run_score(run, "bad-kd-fc", "share of probes raising val loss") == 1.0
    assert run_score(run, "bad-kd-fc", "effect t (mean / se over probes)") == pytest.approx(2.0)  # mean 2, se 1
    assert run_score(run, "bad-kd-fc", "-cos(path, val gradient)") == pytest.approx(0.3)
    assert run_score(run, "good-kd-fc", "effect (mean, nats a step)") is None  # not probed


def test_path_scores_average_the_seeds_and_pair_them_with_the_ablation_truth() -> None:
    sc = Scenario("digits", "permuted_labels", paths=(("kd", "fc", "fc"),))

    def run(name: str, seed: int, acc: float, effect: float | None = None) -> dict:
        probes = {} if effect is None else {f"diag/effect:{p}": [[0, 0.0], [4, effect]]
                                            for p in ("bad-kd-fc", "good-kd-fc")}
        return {"scenario": sc.name, "run": name, "seed": seed, "test_acc": acc, "details": {}, "probes": probes}

    results = [run("full", s, 70 + s, effect=0.1 * (s + 1)) for s in range(3)]
    results += [run("without:bad-kd-fc", s, 90 + s) for s in range(3)]  # removing bad: +20, harmful
    results += [run("without:good-kd-fc", s, 60 + s) for s in range(3)]  # removing good: -10
    rows = path_scores([sc], results, "effect (mean, nats a step)")
    assert rows == [(False, pytest.approx(0.2)), (True, pytest.approx(0.2))]  # good first, as sc.path_ids() lists
    lines, figures = separability_table([sc], results)
    assert figures["effect (mean, nats a step)"]["auc"] == 0.5  # the same score: no separation
    assert any(line.startswith("| effect (mean, nats a step) | 2 (1) | 0.50 |") for line in lines)
