"""Detector bench: does the negative-transfer detector flag the paths that really hurt, and only those?

Scenarios. Per dataset (digits; Fashion-MNIST unless QUICK) and per planted defect (kind, strength, the
defective teacher's seed), a good teacher ("good", clean, seed 0) and a defective one ("bad") teach a
small_cnn (width 16) student, each through four paths: kd and logits on fc (logit paths), at and fitnet on
conv2 (feature paths), every path at weight 1 as in digits_planted.yaml: `equal` weighs every term 1 whatever
its configured weight, and lookahead gates the configured weights, so explicit 1s make the two start alike
(at the conventional weights, AT 1000 and FitNet 100, lookahead ran 30-50 points below equal). AT at weight 1
moves the student little; FitNet at 1 does (its features' MSE is of order 1). Clean-only scenarios put a second
good teacher ("good2", clean, another seed) in the defective one's place. The full, full:effects-only and lookahead
runs probe (diagnostics on); the ablation and oracle runs do not, which leaves their trajectory unchanged and
saves 2/3 of their time.

Runs per scenario (weighting equal unless said, seeds 0-4 each, or 0 to SEEDS-1):
- full: every path (and full:effects-only, the same run judged with geometry_confirms off);
- without:<path>: every path but one (a teacher left without paths is dropped), once per path;
- lookahead: every path, weighting lookahead;
- oracle: every path except the ground-truth harmful ones, weighting equal (the full runs when none is harmful).

Ground truth, per path, from the ablation, paired by seed: a full run and a run without the path share their
seed (the same initial student and batch order), so the gain of removing the path is measured per seed, and the
path is harmful when the mean gain exceeds both the gains' sample standard deviation over the seeds (the loss must
be beyond the seeds' spread) and MIN_HARM_POINTS (one point: 3.6 of digits' 359 test images; a smaller "loss"
is below what a few seeds of a test set that size can resolve, and in the last unpaired scoring a clean teacher's
KD path was called harmful at +0.8 points). Ground truth does not look at which teacher a path comes from: a
good teacher's path can be harmful and a defective one's harmless.

Scoring, for three detectors:
- new: `verdict_details[p]`'s "history" ([[step, verdict], ...]) or, without it, "first_flagged_step";
- new, effects only: the same fields of the full:effects-only runs, the full runs again with
  diagnostics.geometry_confirms off (only the effects' own consistency confirms a verdict). They follow the full
  runs' trajectory (the report says if one does not), but the probe's base point leaves out the paths already
  flagged, so the effects they measure differ from the full runs' once verdicts differ: run again rather than
  re-judged from the full runs' saved probes, so the figures are exact;
- today's: "cosine_verdict"/"cosine_first_flagged_step" when the results carry them; otherwise the main
  fields are today's detector (the new one has not landed) and the two rows are the same (the output says so).
A path is flagged in a run when it was ever judged "hurts"; over the seeds' runs it counts as
flagged by majority (three of five, two of three). Precision = flagged harmful / flagged, recall = flagged
harmful / harmful, false-flag rate = flagged harmless / harmless (a harmless path being every path that is
not harmful by ground truth); median first flag = the median, over every (harmful path, seed) it was
flagged in, of the first "hurts" step as a share of the run's steps. Clean-only flags count every
(path, seed) flag in the clean-only scenarios: there, none may ever be raised. All figures are given per
defect kind and overall (pooled over the paths, not averaged over kinds).

Teachers are trained once per recipe and cached in bench/.workspace-detector (inline teachers are keyed by
their spec), so re-runs skip teacher training. Environment: QUICK=1 digits only, 5 student epochs, one
scenario per defect kind (and one clean-only), no logits paths (kd, at, fitnet per teacher); DATASETS=digits (a
comma list) only those datasets' scenarios; SCENARIOS=clean,permuted only scenarios whose name holds one of
them; SEEDS=3 three seeds instead of five; WORKERS (default 2) parallel runs; REPORT_ONLY=1 prints the last
run's tables again from bench/.workspace-detector/last_results*.json (one file per QUICK, DATASETS, SCENARIOS and
SEEDS) without training. Output: tables per scenario, per path and per defect kind, then one JSON line.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script (and re-imported by spawned workers): engine must import

from bench.planted import fashion_available, rounded  # noqa: E402

HOME = ROOT / "bench" / ".workspace-detector"
# Five by default: with three, chance agreement of the seeds decided one "harm" (a scaled-logits teacher's AT path,
# +0.6/+1.4/+2.0 points, +0.4 ± 1.3 with five). SEEDS=3 takes 3/5 of the time, the original setting.
def seeds_from_env() -> tuple[int, ...]:
    """SEEDS=n (default 5): seeds 0..n-1; a harm needs a spread, so at least two."""
    text = os.environ.get("SEEDS") or "5"
    if not text.isdigit() or int(text) < 2:
        sys.exit(f"SEEDS={text}: give a whole number of seeds, at least 2 (the ground truth needs their spread)")
    return tuple(range(int(text)))


SEEDS = seeds_from_env()  # read again by the spawned workers, from the same environment
HURTS = "hurts"
EFFECTS_ONLY = "full:effects-only"  # the full runs again, judged with diagnostics.geometry_confirms off
PROBED_RUNS = ("full", EFFECTS_ONLY, "lookahead")  # the runs whose verdicts are scored or whose weighting probes


class Detector(NamedTuple):
    runs: str  # the runs whose verdicts it is scored on
    cosine_fields: bool  # reads cosine_verdict / cosine_first_flagged_step where the results carry them
    label: str


DETECTORS = {"new": Detector("full", False, "new"), "effects": Detector(EFFECTS_ONLY, False, "new, effects only"),
             "today": Detector("full", True, "today (cosine)")}
# (distiller, teacher spot, student spot) of every teacher's paths: two logit paths, two feature paths.
PATHS = (("kd", "fc", "fc"), ("logits", "fc", "fc"), ("at", "conv2", "conv2"), ("fitnet", "conv2", "conv2"))
QUICK_PATHS = tuple(p for p in PATHS if p[0] != "logits")  # a quarter fewer runs: kd stays the logit path
CLEAN = "clean"  # the kind of the clean-only scenarios
KIND_OF = {"noisy_labels": "label corruption", "permuted_labels": "label corruption",
           "under_trained": "weak teacher", "random_init": "weak teacher", "scaled_logits": "scaled logits",
           "corrupted_features": "corrupted features", "inverted_input": "input-domain shift",
           "rotated_input": "input-domain shift", "shortcut": "shortcut", "none": CLEAN}


# ------------------------------------------------------------------ pure core (tests/test_detector_bench.py)
MIN_HARM_POINTS = 1.0


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


# ------------------------------------------------------------------ scenarios
@dataclass(frozen=True)
class Scenario:
    dataset_name: str
    defect: str  # "none": clean-only (two good teachers)
    strength: float | None = None  # planted.py's strength; for noisy_labels the share of labels replaced
    defect_seed: int = 0
    paths: tuple[tuple[str, str, str], ...] = PATHS  # every teacher's (distiller, teacher spot, student spot)

    @property
    def kind(self) -> str:
        return KIND_OF[self.defect]

    @property
    def name(self) -> str:
        label = "clean" if self.defect == "none" else self.defect
        strength = "" if self.strength is None else f"-{self.strength:g}"
        return f"{self.dataset_name}-{label}{strength}-s{self.defect_seed}"

    @property
    def other(self) -> str:
        return "good2" if self.defect == "none" else "bad"


@dataclass(frozen=True)
class Setting:
    dataset: dict[str, Any]
    teacher_epochs: int
    epochs: int
    every: int  # probe cadence: about 40-60 probes a run
    log_every: int


def settings(quick: bool) -> dict[str, Setting]:
    return {"digits": Setting({"name": "digits", "batch_size": 64}, 5 if quick else 8, 5 if quick else 10,
                              3 if quick else 4, 4),
            # 5,000 training images, a small validation split (the probe's held-out batches): 4 epochs x 79 steps.
            "fashion_mnist": Setting({"name": "fashion_mnist", "batch_size": 64, "train_size": 5000,
                                      "val_fraction": 0.02}, 5, 4, 8, 8)}


def scenarios(quick: bool) -> list[Scenario]:
    if quick:  # one per defect kind, plus a clean-only one; no logits paths
        return [Scenario("digits", d, st, defect_seed=1 if d == "none" else 0, paths=QUICK_PATHS)
                for d, st in (("none", None), ("permuted_labels", None), ("under_trained", 0.1),
                              ("scaled_logits", 20.0), ("corrupted_features", 30.0), ("rotated_input", None),
                              ("shortcut", 1.0))]
    digits = [Scenario("digits", "none", defect_seed=s) for s in (1, 2)]
    digits += [Scenario("digits", "permuted_labels", defect_seed=s) for s in (0, 1)]
    digits += [Scenario("digits", "noisy_labels", n) for n in (0.3, 0.6, 0.9)]
    digits += [Scenario("digits", "under_trained", 0.1), Scenario("digits", "under_trained", 0.3),
               Scenario("digits", "random_init")]
    digits += [Scenario("digits", "scaled_logits", k) for k in (10.0, 40.0)]
    digits += [Scenario("digits", "corrupted_features", g, defect_seed=s) for g, s in ((10.0, 0), (30.0, 0), (30.0, 1))]
    digits += [Scenario("digits", "inverted_input"), Scenario("digits", "rotated_input")]
    digits += [Scenario("digits", "shortcut", 1.0), Scenario("digits", "shortcut", 0.5)]
    fashion = [Scenario("fashion_mnist", d, s, defect_seed=1 if d == "none" else 0)
               for d, s in (("none", None), ("permuted_labels", None), ("noisy_labels", 0.6),
                            ("under_trained", 0.1), ("scaled_logits", 20.0), ("corrupted_features", 30.0),
                            ("rotated_input", None), ("shortcut", 1.0))]
    return fashion + digits  # Fashion-MNIST runs take ~10x longer: first, so the workers end together


def path_id(teacher: str, distiller: str, spot: str) -> str:
    return f"{teacher}-{distiller}-{spot}"


def all_paths(sc: Scenario) -> list[str]:
    return [path_id(t, d, s) for t in ("good", sc.other) for d, s, _ in sc.paths]


def teacher_dicts(sc: Scenario, setting: Setting) -> list[dict[str, Any]]:
    def source(defect: str, seed: int) -> dict[str, Any]:
        out = {"kind": "train", "epochs": setting.teacher_epochs, "optimizer": {"name": "sgd", "lr": 0.05},
               "seed": seed, "defect": defect}
        if defect == "noisy_labels":
            out["noise"] = sc.strength
        elif sc.strength is not None and defect != "none":
            out["strength"] = sc.strength
        return out

    bad = source("none", sc.defect_seed) if sc.defect == "none" else source(sc.defect, sc.defect_seed)
    return [{"id": "good", "arch": "small_cnn", "source": source("none", 0)},
            {"id": sc.other, "arch": "small_cnn", "source": bad}]


def spec_dict(sc: Scenario, setting: Setting, run: str, seed: int, keep: list[str]) -> dict[str, Any]:
    """A run's spec with only the paths in `keep` (teachers without a path are left out)."""
    paths = [{"id": path_id(t, d, ts), "teacher": t, "distiller": d, "teacher_spot": ts, "student_spot": ss,
              "weight": 1.0} for t in ("good", sc.other) for d, ts, ss in sc.paths if path_id(t, d, ts) in keep]
    used = {p["teacher"] for p in paths}
    return {"name": f"detector-{sc.name}-{run}-s{seed}", "dataset": setting.dataset,
            "teachers": [t for t in teacher_dicts(sc, setting) if t["id"] in used],
            "student": {"arch": "small_cnn", "arch_params": {"width": 16}}, "paths": paths,
            "weighting": {"name": "lookahead" if run == "lookahead" else "equal"},
            # Only the scored runs probe: the probe leaves every step as it was (tests/test_effect_probe.py), so an
            # ablation run without it follows the same trajectory, three times faster.
            "diagnostics": {"enabled": run in PROBED_RUNS, "every": setting.every,
                            "geometry_confirms": run != EFFECTS_ONLY},
            "optimizer": {"name": "sgd", "lr": 0.05}, "epochs": setting.epochs, "seed": seed,
            "log_every": setting.log_every}


# ------------------------------------------------------------------ work done in the worker processes
def init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # two single-threaded runs beat one two-threaded run for models this small


def train_teacher(sc: Scenario, setting: Setting, teacher_id: str) -> float:
    """Train (or reuse) one inline teacher, so the runs that follow never race to train it."""
    from engine.data import load_dataset
    from engine.runner import prepare_teacher
    from engine.runtime import resolve_device
    from engine.spec import parse_spec
    from engine.train import NullReporter

    spec = parse_spec(spec_dict(sc, setting, "full", 0, all_paths(sc)))
    tspec = next(t for t in spec.teachers if t.id == teacher_id)
    _, acc = prepare_teacher(tspec, spec, load_dataset(spec.dataset), HOME, resolve_device(spec.device),
                             NullReporter(), lambda f: None)
    return 100 * float(acc)


def run_one(sc: Scenario, setting: Setting, run: str, seed: int, keep: list[str]) -> dict[str, Any]:
    """One student run: its test accuracy and verdict details, or the error that stopped it."""
    from engine.runner import execute_run
    from engine.spec import parse_spec
    from engine.train import NullReporter

    run_id = f"{sc.name}-{run.replace(':', '_')}-s{seed}"
    folder = HOME / "runs" / run_id
    shutil.rmtree(folder, ignore_errors=True)  # a leftover checkpoint would make fit resume instead of train
    out: dict[str, Any] = {"scenario": sc.name, "run": run, "seed": seed}
    started = time.time()
    reporter = NullReporter()
    try:
        result = execute_run(parse_spec(spec_dict(sc, setting, run, seed, keep)), run_id, HOME, reporter)
    except Exception as err:  # noqa: BLE001  (one failing run must not sink the bench)
        out["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out.update(test_acc=100 * result["test_acc"], seconds=time.time() - started,
               details=result.get("verdict_details", {}), probes=probe_series(reporter))
    return out


def probe_series(reporter: Any) -> dict[str, list[list[float]]]:
    """Every probe measurement of a run, {diag key: [[step, value], ...]}: kept in the saved results so a
    verdict rule can be tried again on the same measurements without training (empty for unprobed runs)."""
    from engine.vocabulary import DIAG_PREFIX

    series: dict[str, list[list[float]]] = {}
    for _phase, step, _epoch, key, value in reporter.rows:
        if key.startswith(DIAG_PREFIX):
            series.setdefault(key, []).append([step, value])
    return series


def total_steps(setting: Setting) -> int:
    """Steps of a run, as engine.train.fit counts them: epochs x ceil(train / batch)."""
    from engine.data import load_dataset
    from engine.spec import DatasetSpec

    train = len(load_dataset(DatasetSpec(**setting.dataset)).train.y)
    return setting.epochs * math.ceil(train / setting.dataset["batch_size"])


# ------------------------------------------------------------------ scheduling
def run_all(plan: list[Scenario], sets: dict[str, Setting], workers: int) -> tuple[list[dict], dict]:
    """Phase 1: teachers, then full, ablation and lookahead runs; phase 2: oracles (they need the ground truth)."""
    HOME.joinpath("teachers").mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")  # no fork after torch has started its threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker) as pool:
        recipes = {json.dumps([sets[s.dataset_name].dataset, t], sort_keys=True): (s, t["id"])
                   for s in plan for t in teacher_dicts(s, sets[s.dataset_name])}
        trained = {key: pool.submit(train_teacher, s, sets[s.dataset_name], tid) for key, (s, tid) in recipes.items()}
        teacher_acc = {s.name: {t["id"]: trained[json.dumps([sets[s.dataset_name].dataset, t], sort_keys=True)].result()
                                for t in teacher_dicts(s, sets[s.dataset_name])} for s in plan}
        jobs = [(s, run, seed, keep) for s in plan for run, keep in phase_one(s) for seed in SEEDS]
        results = _run_jobs(pool, jobs, sets)
        oracle_jobs = [(s, "oracle", seed, keep) for s in plan
                       if (keep := oracle_paths(s, results)) is not None for seed in SEEDS]
        results += _run_jobs(pool, oracle_jobs, sets)
    return results, teacher_acc


def phase_one(sc: Scenario) -> list[tuple[str, list[str]]]:
    paths = all_paths(sc)
    ablations = [(f"without:{p}", [q for q in paths if q != p]) for p in paths]
    return [("full", paths), (EFFECTS_ONLY, paths), ("lookahead", paths), *ablations]


def _run_jobs(pool: ProcessPoolExecutor, jobs: list, sets: dict[str, Setting]) -> list[dict[str, Any]]:
    futures = [pool.submit(run_one, s, sets[s.dataset_name], run, seed, keep) for s, run, seed, keep in jobs]
    results = []
    for n, future in enumerate(futures, 1):
        r = future.result()
        results.append(r)
        what = r.get("error") or f"test acc {r['test_acc']:.1f}% in {r['seconds']:.0f} s"
        print(f"[{n}/{len(jobs)}] {r['scenario']} {r['run']} seed {r['seed']}: {what}", file=sys.stderr, flush=True)
    return results


def accuracies(results: list[dict], scenario: str, run: str) -> dict[int, float]:
    """Test accuracy of each seed's finished run (failed runs are left out)."""
    return {r["seed"]: r["test_acc"] for r in results
            if r["scenario"] == scenario and r["run"] == run and "error" not in r}


def ground_truth(sc: Scenario, results: list[dict]) -> dict[str, dict[str, Any]]:
    """Per path: harmful or not, the mean accuracy gained by removing it and the gains' spread (None where
    fewer than two seeds have both runs)."""
    full = accuracies(results, sc.name, "full")
    out = {}
    for p in all_paths(sc):
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
    return [p for p in all_paths(sc) if p not in harmful] if harmful else None


# ------------------------------------------------------------------ measures
def flags(sc: Scenario, results: list[dict], detector: str) -> dict[str, list[int | None]]:
    """Per path, the first "hurts" step in each of the detector's runs (None: never flagged in that run)."""
    runs = [r for r in results
            if r["scenario"] == sc.name and r["run"] == DETECTORS[detector].runs and "error" not in r]
    return {p: [first_hurt(r["details"].get(p, {}), detector) for r in runs] for p in all_paths(sc)}


def scenario_rows(sc: Scenario, results: list[dict], detector: str, steps: int) -> dict[str, Any]:
    """(harmful, flagged) per path, the first-flag shares of harmful paths, and clean-only flag events."""
    truth = ground_truth(sc, results)
    first = flags(sc, results, detector)
    rows, shares, events = [], [], 0
    for p in all_paths(sc):
        if truth[p]["harmful"] is None:
            continue  # runs failed: no ground truth
        seen = [s is not None for s in first[p]]
        rows.append((truth[p]["harmful"], majority(seen)))
        if truth[p]["harmful"]:
            shares += [s / steps for s in first[p] if s is not None and s >= 0]
        events += sum(seen)
    return {"rows": rows, "shares": shares, "clean_only_flags": events if sc.defect == "none" else 0}


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


def selected_plan(quick: bool, datasets: list[str], only: list[str] | None = None
                  ) -> tuple[list[Scenario], list[str]]:
    """The scenarios to run (those of `datasets` when given, those whose name holds one of `only` when given;
    Fashion-MNIST only where it is on disk) and notes saying what was left out. Exits with a message naming an
    unknown dataset, or why nothing is left."""
    plan, notes = scenarios(quick), []
    known = sorted({s.dataset_name for s in plan})
    if unknown := [name for name in datasets if name not in known]:
        sys.exit(f"DATASETS: {', '.join(unknown)} is not a dataset of this bench ({', '.join(known)})")
    if datasets:
        plan = [s for s in plan if s.dataset_name in datasets]
        notes.append(f"datasets limited to {', '.join(datasets)} (DATASETS)")
    if only:
        plan = [s for s in plan if any(part in s.name for part in only)]
        notes.append(f"scenarios limited to those named with {', '.join(only)} (SCENARIOS)")
    if not quick and any(s.dataset_name == "fashion_mnist" for s in plan) and (why := fashion_available()):
        plan = [s for s in plan if s.dataset_name != "fashion_mnist"]
        notes.append(f"Fashion-MNIST not run: {why}")
    if not plan:
        sys.exit("no scenario left to run: " + "; ".join(notes))
    return plan, notes


def parse_datasets(text: str) -> list[str]:
    """DATASETS=a,b as a sorted list without blanks or repeats (the results file is named after it)."""
    return sorted({name.strip() for name in text.split(",") if name.strip()})


def results_file(quick: bool, datasets: list[str], seeds: int = 5) -> Path:
    """Where a run of this selection keeps its results (REPORT_ONLY=1 reads them back)."""
    parts = ["last_results", *(["quick"] if quick else []), *datasets, *([f"{seeds}seeds"] if seeds != 5 else [])]
    return HOME / f"{'_'.join(parts)}.json"


def main() -> None:
    quick = os.environ.get("QUICK", "") not in ("", "0")
    workers = int(os.environ.get("WORKERS", "2"))
    started = time.time()
    datasets = parse_datasets(os.environ.get("DATASETS", ""))
    only = parse_datasets(os.environ.get("SCENARIOS", ""))  # the same comma list
    plan, notes = selected_plan(quick, datasets, only)
    saved = results_file(quick, datasets + only, len(SEEDS))
    if os.environ.get("REPORT_ONLY", "") not in ("", "0"):  # re-render the last run's tables, train nothing
        if not saved.exists():
            sys.exit(f"REPORT_ONLY: no results of this selection yet ({saved}); run the bench without it first")
        data = json.loads(saved.read_text())
        report(plan, settings(quick), data["results"], data["teacher_acc"], data["seconds"], quick, notes)
        return
    results, teacher_acc = run_all(plan, settings(quick), workers)
    seconds = time.time() - started
    # Kept for REPORT_ONLY=1 and a look at the raw verdicts (every run's verdict_details) afterwards.
    saved.write_text(json.dumps({"teacher_acc": teacher_acc, "results": results, "seconds": seconds}))
    report(plan, settings(quick), results, teacher_acc, seconds, quick, notes)


def path_table(plan: list[Scenario], results: list[dict], labels: dict[str, str]) -> list[str]:
    """Every judged path: the ablation's verdict and each detector's first "hurts" step per seed."""
    lines = ["| scenario | path | acc gain without it (pts) | spread | harmful | "
             + " | ".join(f"first hurts, {label}" for label in labels.values()) + " |",
             "|---|---|---|---|---|" + "---|" * len(labels)]
    for sc in plan:
        truth = ground_truth(sc, results)
        first = {det: flags(sc, results, det) for det in labels}
        for p in all_paths(sc):
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
    present = {r["run"] for r in results}
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


def report(plan: list[Scenario], sets: dict[str, Setting], results: list[dict], teacher_acc: dict,
           seconds: float, quick: bool, notes: list[str]) -> None:
    """Print the tables and the JSON line."""
    steps = {name: total_steps(sets[name]) for name in {s.dataset_name for s in plan}}
    labels, label_notes = detector_labels(results)
    notes = notes + label_notes
    if mismatched := trajectory_mismatches(results):
        notes.append(f"effects-only runs off their full run's trajectory: {', '.join(mismatched)}")
    figures = kind_figures(plan, results, steps, labels)
    print(f"## Detector bench ({'QUICK' if quick else 'full'}, {seconds:.0f} s, {len(results)} runs)\n")
    print("\n".join(f"- {n}" for n in notes + [f"{name}: {n} steps a run" for name, n in steps.items()]) + "\n")
    print("\n".join(scenario_table(plan, results, teacher_acc, labels)) + "\n")
    print("Per path (first hurts: the step in each seed's run; · never, -1 flagged at an unknown step):\n")
    print("\n".join(path_table(plan, results, labels)) + "\n")
    print("\n".join(kind_table(figures, labels)) + "\n")
    overall = figures["overall"]
    print(json.dumps(rounded({
        "bench": "detector", "quick": quick, "seconds": round(seconds), "runs": len(results),
        "failed_runs": sum("error" in r for r in results), **headline(overall["new"]),
        **{name: headline(overall[det]) if det in labels else None
           for name, det in (("effects_only", "effects"), ("today", "today"))},
        "today_fields": "cosine_*" if labels.get("today") == DETECTORS["today"].label else "main fields",
        "lookahead_minus_oracle": overall["lookahead_minus_oracle"], "per_kind": figures})))


if __name__ == "__main__":
    main()
