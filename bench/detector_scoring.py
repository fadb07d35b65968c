"""The detector bench's scoring: ground truth from the ablation runs, flags from the verdicts, the tables.

Everything here reads the results bench/detector.py collects (one dict per run: scenario, run, seed, test_acc,
details = verdict_details, probes) and trains nothing; tests/test_detector_bench.py checks it on hand-made tables.

Ground truth, per path, from the ablation, paired by seed: a full run and a run without the path share their
seed (the same initial student and batch order), so the gain of removing the path is measured per seed, and the
path is harmful when the mean gain exceeds both the gains' sample standard deviation over the seeds (the loss must
be beyond the seeds' spread) and MIN_HARM_POINTS (one point: 3.6 of digits' 359 test images; a smaller "loss"
is below what a few seeds of a test set that size can resolve, and in an unpaired scoring a clean teacher's
KD path was called harmful at +0.8 points). Ground truth does not look at which teacher a path comes from: a
good teacher's path can be harmful and a defective one's harmless.

Scoring, for three detectors and a ceiling:
- new: `verdict_details[p]`'s "history" ([[step, verdict], ...]) or, without it, "first_flagged_step";
- new, effects only: the same fields of the full:effects-only runs, the full runs again with
  diagnostics.geometry_confirms off (only the effects' own consistency confirms a verdict). They follow the full
  runs' trajectory (the report says if one does not), but the probe's base point leaves out the paths already
  flagged, so the effects they measure differ from the full runs' once verdicts differ: run again rather than
  re-judged from the full runs' saved probes, so the figures are exact;
- today's: "cosine_verdict"/"cosine_first_flagged_step" when the results carry them; otherwise the main
  fields are today's detector (the new one has not landed) and the two rows are the same (the output says so);
- the ceiling, "each run's own ablation": no detector, but what one would score if it knew, in each run, the accuracy
  that run's own student would reach without the path (the seed's without: run), and flagged the path when that
  gain exceeds CEILING_POINTS. It has no first-flag time. It is a reference rather than a strict bound: the ground
  truth is the seeds' average, and a run's own outcome is one draw of it, so a detector could beat the ceiling
  only by predicting that average better than the run's own counterfactual does. Where the ceiling falls short of
  a target, the seeds' disagreement alone takes that much away from a one-run judgement.
  CEILING_POINTS is twice MIN_HARM_POINTS: one run cannot see the seeds' spread, so it needs the wider margin
  (on QUICK, 1 point gives the ceiling P 57%, 1.5 gives 80%, 2 gives 100%, all at recall 100%; on full digits
  1 point gives P 76% / R 88%, 1.5 gives 89% / 68%, 2 gives 88% / 60%: no margin reaches 90% / 90%).
A path is flagged in a run when it was ever judged "hurts"; over the seeds' runs it counts as
flagged by majority (three of five, two of three). Precision = flagged harmful / flagged, recall = flagged
harmful / harmful, false-flag rate = flagged harmless / harmless (a harmless path being every path that is
not harmful by ground truth); median first flag = the median, over every (harmful path, seed) it was
flagged in, of the first "hurts" step as a share of the run's steps. Clean-only flags count every
(path, seed) flag in the clean-only scenarios: there, none may ever be raised. All figures are given per
defect kind and overall (pooled over the paths, not averaged over kinds). A last table judges each detector per
run instead, over every (path, seed), against that run's own ablation beyond CEILING_POINTS.
"""
from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any, Iterable, NamedTuple

if TYPE_CHECKING:
    from bench.detector import Scenario


HURTS = "hurts"
EFFECTS_ONLY = "full:effects-only"  # the full runs again, judged with diagnostics.geometry_confirms off
WITHOUT = "without:"  # the ablation runs: "without:<path id>"
CLEAN = "clean"  # the kind of the clean-only scenarios
MIN_HARM_POINTS = 1.0
CEILING_POINTS = 2.0


class Detector(NamedTuple):
    runs: str  # the runs whose verdicts it is scored on (WITHOUT: the ablation runs' accuracies, for the ceiling)
    cosine_fields: bool  # reads cosine_verdict / cosine_first_flagged_step where the results carry them
    label: str


DETECTORS = {"new": Detector("full", False, "new"), "effects": Detector(EFFECTS_ONLY, False, "new, effects only"),
             "today": Detector("full", True, "today (cosine)"),
             "ceiling": Detector(WITHOUT, False, f"ceiling: each run's own ablation > {CEILING_POINTS:g} pts")}


# ------------------------------------------------------------------ ground truth
def paired_gains(full: dict[int, float], without: dict[int, float]) -> list[float]:
    """Accuracy gained by removing the path, per seed both runs finished (accuracies keyed by seed)."""
    return [without[seed] - full[seed] for seed in sorted(full.keys() & without.keys())]


def spread(gains: list[float]) -> float:
    """The seeds' spread of the paired gains: their sample standard deviation (0 for a single value)."""
    return statistics.stdev(gains) if len(gains) > 1 else 0.0


def is_harmful(gains: list[float]) -> bool:
    """Ground truth: removing the path gains more than the seeds' spread and at least MIN_HARM_POINTS."""
    return statistics.fmean(gains) > max(spread(gains), MIN_HARM_POINTS)


def first_hurt(details: dict[str, Any], detector: str) -> int | None:
    """The first step a detector judged the path "hurts" in one run, None if never.

    detector "new" and "effects": the main fields (history when present, else first_flagged_step); "today": the
    cosine_* fields when present, else the main fields (before the new detector lands they are today's)."""
    if DETECTORS[detector].cosine_fields and "cosine_verdict" in details:
        step = details.get("cosine_first_flagged_step")
        return step if step is not None or details["cosine_verdict"] != HURTS else -1
    history = details.get("history")
    if history:
        return next((int(step) for step, verdict in history if verdict == HURTS), None)
    step = details.get("first_flagged_step")
    return step if step is not None or details.get("verdict") != HURTS else -1  # -1: flagged, step unknown


def majority(flags: list[bool]) -> bool:
    """Flagged over the seeds: in more than half of the runs."""
    return sum(flags) * 2 > len(flags)


def score(rows: Iterable[tuple[bool, bool]]) -> dict[str, Any]:
    """Precision, recall and false-flag rate from (harmful, flagged) pairs, one per path; None where undefined."""
    rows = list(rows)
    tp = sum(h and f for h, f in rows)
    flagged = sum(f for _, f in rows)
    harmful = sum(h for h, _ in rows)
    harmless = len(rows) - harmful
    return {"paths": len(rows), "harmful": harmful, "flagged": flagged, "true_positives": tp,
            "precision": tp / flagged if flagged else None, "recall": tp / harmful if harmful else None,
            "false_flag_rate": (flagged - tp) / harmless if harmless else None}


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def accuracies(results: list[dict], scenario: str, run: str) -> dict[int, float]:
    """Test accuracy of each seed's finished run (failed runs are left out)."""
    return {r["seed"]: r["test_acc"] for r in results
            if r["scenario"] == scenario and r["run"] == run and "error" not in r}


def ground_truth(sc: Scenario, results: list[dict]) -> dict[str, dict[str, Any]]:
    """Per path: harmful or not, the mean accuracy gained by removing it and the gains' spread (None where
    fewer than two seeds have both runs)."""
    full = accuracies(results, sc.name, "full")
    out = {}
    for p in sc.path_ids():
        gains = paired_gains(full, accuracies(results, sc.name, f"without:{p}"))
        ok = len(gains) >= 2
        out[p] = {"harmful": is_harmful(gains) if ok else None,
                  "gain_without": statistics.fmean(gains) if ok else None,
                  "spread": spread(gains) if ok else None}
    return out


def oracle_paths(sc: Scenario, results: list[dict]) -> list[str] | None:
    """The oracle's paths; None when no path is harmful (the full runs are then the oracle)."""
    truth = ground_truth(sc, results)
    harmful = [p for p, t in truth.items() if t["harmful"]]
    return [p for p in sc.path_ids() if p not in harmful] if harmful else None


# ------------------------------------------------------------------ flags and scores
def flags(sc: Scenario, results: list[dict], detector: str) -> dict[str, list[int | None]]:
    """Per path, the first "hurts" step in each of the detector's runs (None: never flagged in that run)."""
    if detector == "ceiling":
        return ceiling_flags(sc, results)
    runs = [r for r in results
            if r["scenario"] == sc.name and r["run"] == DETECTORS[detector].runs and "error" not in r]
    return {p: [first_hurt(r["details"].get(p, {}), detector) for r in runs] for p in sc.path_ids()}


def ceiling_flags(sc: Scenario, results: list[dict]) -> dict[str, list[int | None]]:
    """Per path and seed: -1 (flagged, no step) when that seed's run loses more than CEILING_POINTS to the same
    seed's run without the path, else None."""
    full = accuracies(results, sc.name, "full")
    return {p: [-1 if gain > CEILING_POINTS else None
                for gain in paired_gains(full, accuracies(results, sc.name, f"{WITHOUT}{p}"))]
            for p in sc.path_ids()}


def scenario_rows(sc: Scenario, results: list[dict], detector: str, steps: int) -> dict[str, Any]:
    """(harmful, flagged) per path, the first-flag shares of harmful paths, and clean-only flag events."""
    truth = ground_truth(sc, results)
    first = flags(sc, results, detector)
    rows, shares, events = [], [], 0
    for p in sc.path_ids():
        if truth[p]["harmful"] is None:
            continue  # runs failed: no ground truth
        seen = [s is not None for s in first[p]]
        rows.append((truth[p]["harmful"], majority(seen)))
        if truth[p]["harmful"]:
            shares += [s / steps for s in first[p] if s is not None and s >= 0]
        events += sum(seen)
    return {"rows": rows, "shares": shares, "clean_only_flags": events if sc.defect == "none" else 0}


def per_run_rows(sc: Scenario, results: list[dict], detector: str) -> list[tuple[bool, bool]]:
    """(harmful, flagged) per (path, seed), harm judged per run: that seed's run loses more than CEILING_POINTS to
    the same seed's run without the path. It asks whether a detector predicts its own run's counterfactual, which
    the seeds' disagreement does not blur (the ceiling scores 100% here by construction)."""
    full = accuracies(results, sc.name, "full")
    runs = {r["seed"]: r for r in results
            if r["scenario"] == sc.name and r["run"] == DETECTORS[detector].runs and "error" not in r}
    rows = []
    for p in sc.path_ids():
        without = accuracies(results, sc.name, f"{WITHOUT}{p}")
        rows += [(without[seed] - full[seed] > CEILING_POINTS, first_hurt(runs[seed]["details"].get(p, {}), detector)
                  is not None) for seed in sorted(full.keys() & without.keys() & runs.keys())]
    return rows


def per_run_table(plan: list[Scenario], results: list[dict], labels: dict[str, str]) -> tuple[list[str], dict]:
    """Each detector (not the ceiling) scored per run, over every (path, seed); the lines and the scores."""
    scores = {det: score(row for sc in plan for row in per_run_rows(sc, results, det))
              for det in labels if DETECTORS[det].runs != WITHOUT}
    lines = [f"Judged per run (harm: that run loses more than {CEILING_POINTS:g} points to its own ablation):\n",
             "| detector | (path, seed) pairs (harmful) | precision | recall | false-flag rate |",
             "|---|---|---|---|---|"]
    lines += [f"| {labels[det]} | {s['paths']} ({s['harmful']}) | {fmt(s['precision'], pct=True)} | "
              f"{fmt(s['recall'], pct=True)} | {fmt(s['false_flag_rate'], pct=True)} |" for det, s in scores.items()]
    return lines, scores


def summarise(parts: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [row for part in parts for row in part["rows"]]
    shares = [s for part in parts for s in part["shares"]]
    return {**score(rows), "median_first_flag_share": median_or_none(shares),
            "clean_only_flags": sum(part["clean_only_flags"] for part in parts)}


def accuracy_summary(sc: Scenario, results: list[dict]) -> dict[str, float | None]:
    def mean(run: str) -> float | None:
        values = accuracies(results, sc.name, run)
        return statistics.fmean(values.values()) if values else None

    full, lookahead = mean("full"), mean("lookahead")
    oracle = mean("oracle") if oracle_paths(sc, results) is not None else full
    return {"equal": full, "lookahead": lookahead, "oracle": oracle,
            "lookahead_minus_oracle": None if lookahead is None or oracle is None else lookahead - oracle}


# ------------------------------------------------------------------ report
def fmt(value: float | None, digits: int = 2, pct: bool = False) -> str:
    if value is None:
        return "–"
    value += 0.0  # no "-0.00"
    return f"{100 * value:.0f}%" if pct else f"{value:.{digits}f}"


def scenario_table(plan: list[Scenario], results: list[dict], teacher_acc: dict, labels: dict[str, str]
                   ) -> list[str]:
    lines = ["| scenario | teachers (test acc %) | harmful by ablation (gain without, pts) | "
             + "".join(f"flagged, {label} | " for label in labels.values()) + "equal / lookahead / oracle acc % |",
             "|---|---|---|" + "---|" * len(labels) + "---|"]
    for sc in plan:
        truth = ground_truth(sc, results)
        harmful = [f"{p} (+{t['gain_without']:.1f})" for p, t in truth.items() if t["harmful"]]
        flagged = {det: [p for p, f in flags(sc, results, det).items() if majority([s is not None for s in f])]
                   for det in labels}
        acc = accuracy_summary(sc, results)
        teachers = ", ".join(f"{t} {a:.1f}" for t, a in teacher_acc[sc.name].items())
        failed = sum("error" in r for r in results if r["scenario"] == sc.name)
        lines.append(f"| {sc.name}{f' ({failed} runs failed)' if failed else ''} | {teachers} | "
                     f"{', '.join(harmful) or 'none'} | "
                     + "".join(f"{', '.join(flagged[det]) or 'none'} | " for det in labels) +
                     f"{fmt(acc['equal'])} / {fmt(acc['lookahead'])} / {fmt(acc['oracle'])} |")
    return lines


def kind_figures(plan: list[Scenario], results: list[dict], steps: dict[str, int], detectors: Iterable[str]
                 ) -> dict[str, dict[str, Any]]:
    """Per defect kind and overall: each detector's scores and lookahead's accuracy against the oracle."""
    kinds = sorted({sc.kind for sc in plan}, key=lambda k: (k == CLEAN, k))
    groups = {kind: [sc for sc in plan if sc.kind == kind] for kind in kinds} | {"overall": plan}
    out = {}
    for kind, group in groups.items():
        diffs = [d for sc in group if (d := accuracy_summary(sc, results)["lookahead_minus_oracle"]) is not None]
        out[kind] = {det: summarise([scenario_rows(sc, results, det, steps[sc.dataset_name]) for sc in group])
                     for det in detectors}
        out[kind]["scenarios"] = len(group)
        out[kind]["lookahead_minus_oracle"] = statistics.fmean(diffs) if diffs else None
    return out


def kind_table(figures: dict[str, dict[str, Any]], labels: dict[str, str]) -> list[str]:
    lines = ["| defect kind | scenarios | paths (harmful) | detector | precision | recall | false-flag rate | "
             "median first flag (% of run) | clean-only flags | lookahead − oracle (pts) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for kind, fig in figures.items():
        for det, label in labels.items():
            s = fig[det]
            lines.append(f"| {kind} | {fig['scenarios']} | {s['paths']} ({s['harmful']}) | {label} | "
                         f"{fmt(s['precision'], pct=True)} | {fmt(s['recall'], pct=True)} | "
                         f"{fmt(s['false_flag_rate'], pct=True)} | {fmt(s['median_first_flag_share'], pct=True)} | "
                         f"{s['clean_only_flags']} | {fmt(fig['lookahead_minus_oracle'])} |")
    return lines


def path_table(plan: list[Scenario], results: list[dict], labels: dict[str, str]) -> list[str]:
    """Every judged path: the ablation's verdict and each detector's first "hurts" step per seed (the ceiling has
    no steps, and its flags are the gain column's)."""
    labels = {det: label for det, label in labels.items() if DETECTORS[det].runs != WITHOUT}
    lines = ["| scenario | path | acc gain without it (pts) | spread | harmful | "
             + " | ".join(f"first hurts, {label}" for label in labels.values()) + " |",
             "|---|---|---|---|---|" + "---|" * len(labels)]
    for sc in plan:
        truth = ground_truth(sc, results)
        first = {det: flags(sc, results, det) for det in labels}
        for p in sc.path_ids():
            t = truth[p]
            cells = [fmt(t["gain_without"]), fmt(t["spread"]), {True: "yes", False: "no", None: "–"}[t["harmful"]]]
            cells += [" ".join("·" if s is None else str(s) for s in first[det][p]) for det in labels]
            lines.append(f"| {sc.name} | {p} | " + " | ".join(cells) + " |")
    return lines


def headline(figures: dict[str, Any]) -> dict[str, Any]:
    """A detector's overall figures that the JSON line carries at its top level."""
    return {k: figures[k] for k in ("precision", "recall", "false_flag_rate", "median_first_flag_share",
                                    "clean_only_flags")}


def detector_labels(results: list[dict]) -> tuple[dict[str, str], list[str]]:
    """The detectors the results can score (an older results file has no effects-only runs), their labels, and
    notes on what is missing or falls back."""
    present = {r["run"] for r in results} | {WITHOUT for r in results if r["run"].startswith(WITHOUT)}
    has_cosine = any("cosine_verdict" in d for r in results if "error" not in r for d in r["details"].values())
    labels, notes = {}, []
    for key, det in DETECTORS.items():
        if det.runs not in present:
            notes.append(f"'{det.label}' not scored: these results hold no {det.runs} runs")
        elif det.cosine_fields and not has_cosine:
            labels[key] = "today (= main fields)"
            notes.append("The results carry no cosine_* fields: the main fields are today's detector, so 'new' "
                         "and 'today' are the same detector.")
        else:
            labels[key] = det.label
    return labels, notes


def trajectory_mismatches(results: list[dict]) -> list[str]:
    """Effects-only runs whose test accuracy differs from their full run's: they should follow the same
    trajectory (only the verdict rule differs, and verdicts do not steer an equal-weighted run)."""
    full = {(r["scenario"], r["seed"]): r["test_acc"] for r in results if r["run"] == "full" and "error" not in r}
    return [f"{r['scenario']} seed {r['seed']}" for r in results
            if r["run"] == EFFECTS_ONLY and "error" not in r
            and abs(r["test_acc"] - full.get((r["scenario"], r["seed"]), r["test_acc"])) > 1e-9]
