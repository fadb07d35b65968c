"""The detector bench's pure core (bench/detector_scoring.py, and bench/detector.py's selection): ground truth from
accuracies, flags from verdict details, scores from tables."""
from __future__ import annotations

import pytest

from bench.detector import HOME, Scenario, comma_list, results_file, selected_plan
from bench.detector_scoring import (
    EFFECTS_ONLY, ceiling_flags, detector_labels, first_hurt, is_harmful, majority, paired_gains, per_run_rows,
    per_run_table, score, scenario_rows, spread, trajectory_mismatches)


def test_ground_truth_pairs_runs_by_seed_and_needs_a_gain_beyond_the_seeds_spread() -> None:
    full = {0: 80.0, 1: 85.0, 2: 90.0}  # seeds differ by 5 points: unpaired, a 3-point gain would drown
    gains = paired_gains(full, {0: 83.0, 1: 88.5, 2: 92.5})
    assert gains == pytest.approx([3.0, 3.5, 2.5])
    assert spread(gains) == pytest.approx(0.5)
    assert is_harmful(gains)  # +3 on every seed
    assert not is_harmful([4.0, -1.0, 6.0])  # +3 on average, but the seeds disagree (std 3.6)
    assert not is_harmful([-1.0, -2.0, -1.5])  # removing it loses accuracy: a helpful path
    assert not is_harmful([0.8, 0.9, 0.7])  # consistent but under one point: below what 3 seeds resolve
    assert paired_gains({0: 1.0, 1: 2.0}, {1: 4.0, 2: 9.0}) == [2.0]  # only seeds with both runs


def test_flags_read_history_first_and_cosine_fields_for_today() -> None:
    new_only = {"verdict": "neutral", "first_flagged_step": 12,
                "history": [[4, "helps"], [12, "hurts"], [20, "neutral"]]}
    assert first_hurt(new_only, "new") == 12
    assert first_hurt(new_only, "today") == 12  # no cosine_* fields: the main ones are today's detector
    both = {**new_only, "cosine_verdict": "neutral", "cosine_first_flagged_step": None}
    assert first_hurt(both, "today") is None and first_hurt(both, "new") == 12
    assert first_hurt({"verdict": "helps", "first_flagged_step": None}, "new") is None
    assert first_hurt({"verdict": "neutral", "first_flagged_step": 30}, "new") == 30  # ever flagged counts
    assert first_hurt({}, "new") is None  # a path the run does not report


def test_majority_of_seeds() -> None:
    assert majority([True, True, False]) and not majority([True, False, False]) and not majority([])


def test_precision_recall_and_false_flags_on_a_hand_made_table() -> None:
    rows = [(True, True), (True, True), (True, False),  # 3 harmful, 2 flagged
            (False, True), (False, False), (False, False), (False, False)]  # 4 harmless, 1 flagged
    s = score(rows)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["false_flag_rate"] == pytest.approx(1 / 4)
    empty = score([(False, False)])
    assert empty["precision"] is None and empty["recall"] is None and empty["false_flag_rate"] == 0


def _run(scenario: str, run: str, seed: int, acc: float, details: dict | None = None) -> dict:
    return {"scenario": scenario, "run": run, "seed": seed, "test_acc": acc, "details": details or {}}


def test_scenario_rows_combine_ablation_and_majority_flags() -> None:
    sc = Scenario("digits", "permuted_labels", paths=(("kd", "fc", "fc"),))
    flagged = {"bad-kd-fc": {"first_flagged_step": 10}, "good-kd-fc": {"first_flagged_step": None}}
    once = {"bad-kd-fc": {"first_flagged_step": None}, "good-kd-fc": {"first_flagged_step": 50}}
    results = [_run(sc.name, "full", 0, 70, flagged), _run(sc.name, "full", 1, 71, flagged),
               _run(sc.name, "full", 2, 72, once)]
    results += [_run(sc.name, "without:bad-kd-fc", s, 90 + s) for s in range(3)]  # removing bad: +20
    results += [_run(sc.name, "without:good-kd-fc", s, 60 + s) for s in range(3)]  # removing good: -10
    rows = scenario_rows(sc, results, "new", steps=100)
    assert rows["rows"] == [(False, False), (True, True)]  # good: harmless, 1/3 flags; bad: harmful, 2/3
    assert sorted(rows["shares"]) == [0.1, 0.1] and rows["clean_only_flags"] == 0
    clean = Scenario("digits", "none", defect_seed=1, paths=(("kd", "fc", "fc"),))
    renamed = [{**r, "scenario": clean.name, "run": r["run"].replace("bad", "good2"),
                "details": {k.replace("bad", "good2"): v for k, v in r["details"].items()}} for r in results]
    assert scenario_rows(clean, renamed, "new", steps=100)["clean_only_flags"] == 3  # every (path, seed) flag


def test_the_effects_only_detector_reads_its_own_runs() -> None:
    sc = Scenario("digits", "permuted_labels", paths=(("kd", "fc", "fc"),))
    flagged = {"bad-kd-fc": {"first_flagged_step": 10}, "good-kd-fc": {"first_flagged_step": None}}
    quiet = {"bad-kd-fc": {"first_flagged_step": None}, "good-kd-fc": {"first_flagged_step": None}}
    results = [_run(sc.name, "full", s, 70 + s, flagged) for s in range(3)]
    results += [_run(sc.name, EFFECTS_ONLY, s, 70 + s, quiet) for s in range(3)]
    results += [_run(sc.name, "without:bad-kd-fc", s, 90 + s) for s in range(3)]
    results += [_run(sc.name, "without:good-kd-fc", s, 60 + s) for s in range(3)]
    assert scenario_rows(sc, results, "new", steps=100)["rows"] == [(False, False), (True, True)]
    assert scenario_rows(sc, results, "effects", steps=100)["rows"] == [(False, False), (True, False)]


def test_the_ceiling_flags_a_path_in_each_seed_whose_own_ablation_gains_more_than_two_points() -> None:
    sc = Scenario("digits", "permuted_labels", paths=(("kd", "fc", "fc"),))
    results = [_run(sc.name, "full", s, 70.0) for s in range(3)]
    results += [_run(sc.name, "without:bad-kd-fc", s, acc) for s, acc in enumerate((76.0, 72.5, 69.5))]
    results += [_run(sc.name, "without:good-kd-fc", s, acc) for s, acc in enumerate((72.5, 60.0, 71.5))]
    assert ceiling_flags(sc, results) == {"good-kd-fc": [-1, None, None], "bad-kd-fc": [-1, -1, None]}
    rows = scenario_rows(sc, results, "ceiling", steps=100)
    # bad: +2.7 ± 3.3 is within the seeds' spread (harmless by ground truth), yet 2 of 3 seeds lose > 2 points
    assert rows["rows"] == [(False, False), (False, True)] and rows["shares"] == []
    assert "ceiling" in detector_labels(results)[0]


def test_judged_per_run_each_seed_is_scored_against_its_own_ablation() -> None:
    sc = Scenario("digits", "permuted_labels", paths=(("kd", "fc", "fc"),))
    hit = {"bad-kd-fc": {"first_flagged_step": 10}, "good-kd-fc": {"first_flagged_step": None}}
    miss = {"bad-kd-fc": {"first_flagged_step": None}, "good-kd-fc": {"first_flagged_step": 30}}
    results = [_run(sc.name, "full", 0, 70.0, hit), _run(sc.name, "full", 1, 70.0, miss)]
    results += [_run(sc.name, "without:bad-kd-fc", s, acc) for s, acc in enumerate((75.0, 73.0))]  # +5, +3
    results += [_run(sc.name, "without:good-kd-fc", s, acc) for s, acc in enumerate((70.5, 69.0))]  # +0.5, -1
    assert per_run_rows(sc, results, "new") == [(False, False), (False, True), (True, True), (True, False)]
    lines, scores = per_run_table([sc], results, {"new": "new", "ceiling": "ceiling"})
    assert list(scores) == ["new"] and scores["new"]["precision"] == 0.5 and scores["new"]["recall"] == 0.5
    assert "| new | 4 (2) | 50% | 50% | 50% |" in lines


def test_an_older_results_file_scores_only_the_detectors_it_has_runs_for() -> None:
    old = [_run("s", "full", 0, 90, {"p": {"verdict": "neutral", "cosine_verdict": "neutral"}})]
    labels, notes = detector_labels(old)
    assert list(labels) == ["new", "today"] and any("no full:effects-only runs" in n for n in notes)
    both = old + [_run("s", EFFECTS_ONLY, 0, 90, {"p": {"verdict": "neutral"}})]
    assert list(detector_labels(both)[0]) == ["new", "effects", "today"]


def test_effects_only_runs_off_their_full_runs_trajectory_are_named() -> None:
    results = [_run("s", "full", 0, 90.0), _run("s", EFFECTS_ONLY, 0, 90.0),
               _run("s", "full", 1, 91.0), _run("s", EFFECTS_ONLY, 1, 88.0)]
    assert trajectory_mismatches(results) == ["s seed 1"]


def test_datasets_selection_is_normalised_checked_and_names_its_results_file() -> None:
    assert comma_list(" fashion_mnist, digits,digits,") == ["digits", "fashion_mnist"]
    assert results_file(True, []) == HOME / "last_results_quick.json"
    assert results_file(False, ["digits"]) == HOME / "last_results_digits.json"
    assert results_file(False, ["fashion_mnist"], seeds=3) == HOME / "last_results_fashion_mnist_3seeds.json"
    plan, notes = selected_plan(False, ["digits"])
    assert plan and {s.dataset_name for s in plan} == {"digits"} and "DATASETS" in notes[0]
    picked, _ = selected_plan(True, [], ["clean", "permuted"])
    assert [s.name for s in picked] == ["digits-clean-s1", "digits-permuted_labels-s0"]
    with pytest.raises(SystemExit, match="cifar10 is not a dataset of this bench"):
        selected_plan(True, ["cifar10"])
