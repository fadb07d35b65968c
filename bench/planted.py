"""Planted-teacher bench: does the negative-transfer probe flag broken teachers, and do weightings cope with them?

Per dataset, a good teacher and a label-permuted one (trained inline on a fixed derangement of the
classes) teach a small_cnn (width 16) student through the paths of assets/configs/digits_planted.yaml.
Harmful paths are those of planted teachers (path ids begin with their teacher's id). Diagnostics are on
in every run, so detection is measured in all of them:

- detection: weighting equal, 5 seeds. A seed counts as detected when every harmful path is flagged
  (first_flagged_step not None) within the first 20% of the run's steps; a false flag is a clean path
  flagged at any time.
- accuracy: the weightings equal, uncertainty, adaptive_distillation and lookahead, and the path method
  amtml (weighting fixed), x 3 seeds: final test accuracy, the last logged weight of each harmful path,
  detection step and false flags; and the oracle: the same spec without the planted teachers and their
  paths (weighting equal). Rows keep the labels of the version-1 aggregators, so the JSON keys stay.

Seeds vary the student (initial weights, batch order, probe batches); teachers are trained once per
dataset (seed 0) and cached in bench/.workspace-planted, so re-runs skip teacher training.

Environment: QUICK=1 digits only with fewer epochs (a few minutes); EXTRA=1 adds a digits setup with
three planted teachers (permuted labels, noisy labels, random init); WORKERS (default 2) parallel runs.
Output: Markdown tables, then one JSON line with the key figures.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script (and re-imported by spawned workers): engine must import

HOME = ROOT / "bench" / ".workspace-planted"
# Row label -> (weighting, path method or None); the labels are the JSON keys of the bench's figures.
COMBINATIONS = {"equal": ("equal", None), "uncertainty": ("uncertainty", None),
                "adaptive_distillation": ("adaptive_distillation", None), "amtml": ("fixed", "amtml"),
                "lookahead": ("lookahead", None)}
ACC_SEEDS = (0, 1, 2)
DETECT_SEEDS = (0, 1, 2, 3, 4)
DETECT_COMBINATION = "equal"
EARLY_SHARE = 0.2  # "flagged within the first 20% of training"
ORACLE = "oracle"
# Each teacher contributes a logits path and one more; the planted teachers' are the harmful ones.
GOOD_PATHS = (("kd", "fc", "fc"), ("at", "conv2", "conv2"))
PLANTED_PATHS = (("kd", "fc", "fc"), ("logits", "fc", "fc"))


# ------------------------------------------------------------------ setups
@dataclass(frozen=True)
class Planted:
    id: str
    defect: str
    epochs: int
    noise: float = 0.4


@dataclass(frozen=True)
class Setup:
    name: str
    dataset: dict[str, Any]
    good_epochs: int
    planted: tuple[Planted, ...]
    epochs: int
    every: int  # probe cadence: chosen so a run has about 40-60 probes
    log_every: int

    @property
    def harmful(self) -> list[str]:
        return [path_id(p.id, d, s) for p in self.planted for d, s, _ in PLANTED_PATHS]

    @property
    def clean(self) -> list[str]:
        return [path_id("good", d, s) for d, s, _ in GOOD_PATHS]


def path_id(teacher: str, distiller: str, spot: str) -> str:
    return f"{teacher}-{distiller}-{spot}"


def setups(quick: bool, extra: bool) -> list[Setup]:
    # QUICK shortens the run and probes every 3 steps instead of 4, keeping ~50 probes per run so
    # "within 20% of training" measures the probe, not a coarser probe grid.
    permuted = Planted("permuted", "permuted_labels", 5 if quick else 8)
    digits = Setup("digits", {"name": "digits", "batch_size": 64}, 5 if quick else 8, (permuted,),
                   epochs=8 if quick else 10, every=3 if quick else 4, log_every=4)
    out = [digits]
    if extra:
        out.append(Setup("digits-3planted", digits.dataset, digits.good_epochs,
                         (permuted, Planted("noisy", "noisy_labels", permuted.epochs, noise=0.4),
                          Planted("random", "random_init", 1)),
                         epochs=digits.epochs, every=digits.every, log_every=4))
    if not quick:
        # 5,000 training images; a small validation split (the probe draws its held-out batches
        # from it) keeps the per-epoch evaluation cheap. 4 epochs x 79 steps, probed every 8: ~40 probes.
        fashion = {"name": "fashion_mnist", "batch_size": 64, "train_size": 5000, "val_fraction": 0.02}
        out.append(Setup("fashion_mnist", fashion, 5, (Planted("permuted", "permuted_labels", 3),),
                         epochs=4, every=8, log_every=8))
    return out


def teacher_dicts(setup: Setup, oracle: bool) -> list[dict[str, Any]]:
    sgd = {"name": "sgd", "lr": 0.05}
    good = {"id": "good", "arch": "small_cnn", "source": {"kind": "train", "epochs": setup.good_epochs, "optimizer": sgd}}
    planted = [{"id": p.id, "arch": "small_cnn",
                "source": {"kind": "train", "epochs": p.epochs, "optimizer": sgd, "defect": p.defect, "noise": p.noise}}
               for p in setup.planted]
    return [good] if oracle else [good, *planted]


def path_dicts(setup: Setup, oracle: bool) -> list[dict[str, Any]]:
    def paths(teacher: str, kinds: tuple[tuple[str, str, str], ...]) -> list[dict[str, Any]]:
        # Weight 1 on every path, as in digits_planted.yaml: equal, fixed and lookahead start alike.
        return [{"id": path_id(teacher, d, t), "teacher": teacher, "distiller": d, "teacher_spot": t,
                 "student_spot": s, "weight": 1.0} for d, t, s in kinds]

    out = paths("good", GOOD_PATHS)
    if not oracle:
        for p in setup.planted:
            out += paths(p.id, PLANTED_PATHS)
    return out


def spec_dict(setup: Setup, combination: str, seed: int) -> dict[str, Any]:
    """The run's spec; combination ORACLE means equal weighting without the planted teachers."""
    oracle = combination == ORACLE
    weighting, method = ("equal", None) if oracle else COMBINATIONS[combination]
    data = {"name": f"planted-{setup.name}-{combination}-s{seed}", "dataset": setup.dataset,
            "teachers": teacher_dicts(setup, oracle),
            "student": {"arch": "small_cnn", "arch_params": {"width": 16}},
            "paths": path_dicts(setup, oracle), "weighting": {"name": weighting},
            "diagnostics": {"enabled": True, "every": setup.every},
            "optimizer": {"name": "sgd", "lr": 0.05}, "epochs": setup.epochs, "seed": seed,
            "log_every": setup.log_every}
    if method is not None:
        data["method"] = {"name": method}
    return data


# ------------------------------------------------------------------ work done in the worker processes
def init_worker() -> None:
    import torch

    # Two single-threaded runs beat one two-threaded run for models this small (less sync overhead).
    torch.set_num_threads(1)


def train_teacher(setup: Setup, teacher_id: str) -> tuple[str, str, float]:
    """Train (or reuse) one inline teacher, so the runs that follow never race to train it."""
    from engine.data import load_dataset
    from engine.runner import prepare_teacher
    from engine.spec import parse_spec
    from engine.runtime import resolve_device
    from engine.train import NullReporter

    spec = parse_spec(spec_dict(setup, DETECT_COMBINATION, 0))
    tspec = next(t for t in spec.teachers if t.id == teacher_id)
    bundle = load_dataset(spec.dataset)
    _, acc = prepare_teacher(tspec, spec, bundle, HOME, resolve_device(spec.device), NullReporter(), lambda f: None)
    return setup.name, teacher_id, float(acc)


def run_one(setup: Setup, combination: str, seed: int) -> dict[str, Any]:
    """One student run; returns what the tables need, or the error that stopped it."""
    from engine.runner import execute_run
    from engine.spec import parse_spec
    from engine.train import NullReporter

    run_id = f"{setup.name}-{combination}-s{seed}"
    folder = HOME / "runs" / run_id
    shutil.rmtree(folder, ignore_errors=True)  # a leftover checkpoint would make fit resume instead of train
    out: dict[str, Any] = {"setup": setup.name, "combination": combination, "seed": seed}
    reporter = NullReporter()
    started = time.time()
    try:
        result = execute_run(parse_spec(spec_dict(setup, combination, seed)), run_id, HOME, reporter)
    except Exception as err:  # noqa: BLE001  (one failing combination must not sink the bench)
        out["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        return out
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    details = result.get("verdict_details", {})
    out.update(test_acc=100 * result["test_acc"], seconds=time.time() - started,
               teacher_acc={k: 100 * v for k, v in result["teacher_test_acc"].items() if v is not None},
               first_flag={pid: d["first_flagged_step"] for pid, d in details.items()},
               weight={pid: _last(reporter.series(f"weight/path:{pid}")) for pid in details})
    return out


def _last(values: list[float]) -> float | None:
    return values[-1] if values else None


# ------------------------------------------------------------------ scheduling
def total_steps(setup: Setup) -> int:
    """Steps of a run, computed like engine.train.fit does: epochs x ceil(train / batch)."""
    from engine.data import load_dataset
    from engine.spec import DatasetSpec

    train = len(load_dataset(DatasetSpec(**setup.dataset)).train.y)
    return setup.epochs * math.ceil(train / setup.dataset["batch_size"])


def jobs_for(setup: Setup, combinations: list[str]) -> list[tuple[Setup, str, int]]:
    jobs = [(setup, combination, seed) for combination in combinations for seed in ACC_SEEDS]
    jobs += [(setup, DETECT_COMBINATION, seed) for seed in DETECT_SEEDS if seed not in ACC_SEEDS]
    return jobs + [(setup, ORACLE, seed) for seed in ACC_SEEDS]


def run_all(plan: list[Setup], combinations: list[str], workers: int) -> tuple[list[dict[str, Any]], dict]:
    HOME.joinpath("teachers").mkdir(parents=True, exist_ok=True)  # the runner saves teachers there
    context = multiprocessing.get_context("spawn")  # no fork after torch has started its threads
    teacher_acc: dict[str, dict[str, float]] = {}
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker) as pool:
        # One job per distinct teacher recipe: setups share teachers, and two processes training the
        # same one would write the same cache file.
        recipes = {json.dumps([s.dataset, t], sort_keys=True): (s, t["id"])
                   for s in plan for t in teacher_dicts(s, oracle=False)}
        warm = {key: pool.submit(train_teacher, *job) for key, job in recipes.items()}
        for s in plan:
            for t in teacher_dicts(s, oracle=False):
                acc = warm[json.dumps([s.dataset, t], sort_keys=True)].result()[2]
                teacher_acc.setdefault(s.name, {})[t["id"]] = 100 * acc
        # Fashion-MNIST runs take ~10x longer than digits ones: queue them first so the workers end together.
        ordered = sorted(plan, key=lambda s: s.dataset["name"] != "fashion_mnist")
        jobs = [j for s in ordered for j in jobs_for(s, combinations)]
        futures = [pool.submit(run_one, *job) for job in jobs]
        results = []
        for n, future in enumerate(futures, 1):
            r = future.result()
            results.append(r)
            what = r.get("error") or f"test acc {r['test_acc']:.1f}% in {r['seconds']:.0f} s"
            print(f"[{n}/{len(jobs)}] {r['setup']} {r['combination']} seed {r['seed']}: {what}", file=sys.stderr)
    return results, teacher_acc


# ------------------------------------------------------------------ measures
def detection(run: dict[str, Any], setup: Setup, steps: int) -> dict[str, Any]:
    """Detection step = when the last harmful path got flagged; detected = all of them within 20%."""
    flags = [run["first_flag"].get(pid) for pid in setup.harmful if pid in run["first_flag"]]
    caught = bool(flags) and all(f is not None for f in flags)
    step = max(flags) if caught else None
    return {"detected": caught and step <= EARLY_SHARE * steps, "step": step,
            "fraction": step / steps if step is not None else None,
            "false_flags": sum(run["first_flag"].get(pid) is not None for pid in setup.clean)}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def runs_of(results: list[dict[str, Any]], setup: Setup, combination: str, seeds: tuple[int, ...]) -> list[dict]:
    return [r for r in results if r["setup"] == setup.name and r["combination"] == combination and r["seed"] in seeds]


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


# ------------------------------------------------------------------ tables
def detection_table(setup: Setup, runs: list[dict], steps: int) -> tuple[list[str], dict[str, Any]]:
    lines = [f"Detection ({DETECT_COMBINATION}, {len(DETECT_SEEDS)} seeds; 20% of the run = step "
             f"{EARLY_SHARE * steps:.0f} of {steps}):", "",
             "| seed | " + " | ".join(f"{pid} first flag" for pid in setup.harmful)
             + " | all harmful flagged ≤ 20% | false flags |",
             "|---|" + "---|" * (len(setup.harmful) + 2)]
    found = [r for r in runs if "error" not in r]
    for r in found:
        d = detection(r, setup, steps)
        cells = [str(r["first_flag"].get(pid)) for pid in setup.harmful]
        lines.append(f"| {r['seed']} | " + " | ".join(cells) + f" | {'yes' if d['detected'] else 'no'} | "
                     f"{d['false_flags']} |")
    measures = [detection(r, setup, steps) for r in found]
    fractions = [m["fraction"] for m in measures if m["fraction"] is not None]
    summary = {"seeds": len(found), "detected_seeds": sum(m["detected"] for m in measures),
               "detection_rate": sum(m["detected"] for m in measures) / len(found) if found else None,
               "median_detection_fraction": statistics.median(fractions) if fractions else None,
               "false_flags": sum(m["false_flags"] for m in measures)}
    if len(setup.planted) > 1:  # with several planted teachers, say which ones the probe catches
        summary["per_teacher_rate"] = per_teacher_rate(setup, found, steps)
    lines += ["", f"Detected in {summary['detected_seeds']}/{len(found)} seeds; median detection at "
                  f"{fmt(pct(summary['median_detection_fraction']), 1)}% of the run; "
                  f"{summary['false_flags']} clean-path flag(s) in all."]
    if "per_teacher_rate" in summary:
        lines.append("Per planted teacher, share of seeds with all its paths flagged ≤ 20%: " + ", ".join(
            f"{tid} {rate:.0%}" for tid, rate in summary["per_teacher_rate"].items()) + ".")
    return lines, summary


def per_teacher_rate(setup: Setup, runs: list[dict], steps: int) -> dict[str, float]:
    rates = {}
    for p in setup.planted:
        pids = [path_id(p.id, d, s) for d, s, _ in PLANTED_PATHS]
        ok = [all(r["first_flag"].get(pid) is not None and r["first_flag"][pid] <= EARLY_SHARE * steps for pid in pids)
              for r in runs]
        rates[p.id] = sum(ok) / len(ok) if ok else 0.0
    return rates


def pct(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


def accuracy_table(setup: Setup, results: list[dict], steps: int, skipped: dict[str, str]
                   ) -> tuple[list[str], dict[str, float | None]]:
    header = ("| combination | test acc % (mean ± std) | " + " | ".join(f"final weight {pid}" for pid in setup.harmful)
              + " | detection step (median, % of run) | detected | false flags |")
    lines = [f"Accuracy ({len(ACC_SEEDS)} seeds; weights are the last logged ones, mean over seeds):", "", header,
             "|---|---|" + "---|" * (len(setup.harmful) + 3)]
    accuracy: dict[str, float | None] = {}
    for combination in (*COMBINATIONS, ORACLE):
        runs = runs_of(results, setup, combination, ACC_SEEDS)
        ok = [r for r in runs if "error" not in r]
        label = "oracle (no planted teachers, equal)" if combination == ORACLE else combination
        if combination in skipped or not ok:
            reason = skipped.get(combination) or (runs[0]["error"] if runs else "not run")
            accuracy[combination] = None
            lines.append(f"| {label} | n/a: {reason} |" + " |" * (len(setup.harmful) + 3))
            continue
        accuracy[combination] = statistics.fmean(r["test_acc"] for r in ok)
        lines.append(accuracy_row(label, setup, ok, steps, oracle=combination == ORACLE))
    return lines, accuracy


def accuracy_row(label: str, setup: Setup, runs: list[dict], steps: int, oracle: bool) -> str:
    mean, std = mean_std([r["test_acc"] for r in runs])
    failed = f" ({len(ACC_SEEDS) - len(runs)} seed(s) failed)" if len(runs) < len(ACC_SEEDS) else ""
    cells = [f"{mean:.2f} ± {std:.2f}{failed}"]
    measures = [detection(r, setup, steps) for r in runs]
    if oracle:  # no harmful paths: only false flags mean anything
        cells += ["–"] * len(setup.harmful) + ["–", "–"]
    else:
        for pid in setup.harmful:
            weights = [r["weight"].get(pid) for r in runs if r["weight"].get(pid) is not None]
            cells.append(fmt(statistics.fmean(weights), 3) if weights else "–")
        flagged = [m["step"] for m in measures if m["step"] is not None]
        median = statistics.median(flagged) if flagged else None
        cells.append("never" if median is None else f"{median:.0f} ({100 * median / steps:.0f}%)")
        cells.append(f"{sum(m['detected'] for m in measures)}/{len(runs)}")
    cells.append(str(sum(m["false_flags"] for m in measures)))
    return f"| {label} | " + " | ".join(cells) + " |"


def setup_report(setup: Setup, results: list[dict], teacher_acc: dict[str, float], skipped: dict[str, str]
                 ) -> tuple[list[str], dict[str, Any]]:
    steps = total_steps(setup)
    train = setup.dataset.get("train_size")
    lines = [f"### {setup.name}", "",
             "Teachers (test acc %): " + ", ".join(f"{t} {a:.1f}" for t, a in teacher_acc.items())
             + f". Student small_cnn width 16, {setup.epochs} epochs = {steps} steps"
             + (f" on {train} training images" if train else "") + f", probe every {setup.every} steps. "
             f"Harmful paths: {', '.join(setup.harmful)}; clean: {', '.join(setup.clean)}.", ""]
    seeds = tuple(sorted(set(ACC_SEEDS) | set(DETECT_SEEDS)))
    det_lines, det = detection_table(setup, runs_of(results, setup, DETECT_COMBINATION, seeds), steps)
    acc_lines, accuracy = accuracy_table(setup, results, steps, skipped)
    lines += det_lines + [""] + acc_lines + [""]
    figures = {**det, "accuracy": {k: v for k, v in accuracy.items() if k != ORACLE},
               "oracle_accuracy": accuracy[ORACLE],
               "lookahead_minus_oracle": difference(accuracy.get("lookahead"), accuracy[ORACLE]),
               "lookahead_minus_equal": difference(accuracy.get("lookahead"), accuracy.get("equal"))}
    return lines, rounded(figures)


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def done_means(figures: dict[str, Any]) -> dict[str, bool | None]:
    """The issue's acceptance: >= 4/5 seeds detected with no clean flag; lookahead within 1 pt of oracle, above equal."""
    rate, minus_oracle, minus_equal = (figures["detection_rate"], figures["lookahead_minus_oracle"],
                                       figures["lookahead_minus_equal"])
    return {"detection": None if rate is None else rate >= 0.8 and figures["false_flags"] == 0,
            "lookahead_near_oracle": None if minus_oracle is None else minus_oracle >= -1.0,
            "lookahead_above_equal": None if minus_equal is None else minus_equal > 0}


# ------------------------------------------------------------------ main
def unavailable_combinations() -> dict[str, str]:
    """Row label -> why it cannot run, for rows whose weighting or path method is not registered."""
    from engine.methods import METHODS
    from engine.weightings import WEIGHTINGS

    skipped = {}
    for label, (weighting, method) in COMBINATIONS.items():
        missing = [f"weighting '{weighting}'"] if weighting not in WEIGHTINGS else []
        missing += [f"method '{method}'"] if method is not None and method not in METHODS else []
        if missing:
            skipped[label] = f"{' and '.join(missing)} not registered yet"
    return skipped


def fashion_available() -> str | None:
    """None when Fashion-MNIST loads, else why not."""
    from engine.data import DatasetError, load_dataset
    from engine.spec import DatasetSpec

    try:
        load_dataset(DatasetSpec(name="fashion_mnist", train_size=10))
    except DatasetError as err:
        return str(err)
    return None


def main() -> None:
    quick = os.environ.get("QUICK", "") not in ("", "0")
    extra = os.environ.get("EXTRA", "") not in ("", "0")
    workers = int(os.environ.get("WORKERS", "2"))
    started = time.time()
    plan = setups(quick, extra)
    notes = []
    if not quick and (why := fashion_available()):
        plan = [s for s in plan if s.dataset["name"] != "fashion_mnist"]
        notes.append(f"Fashion-MNIST not run: {why}")
    skipped = unavailable_combinations()
    combinations = [c for c in COMBINATIONS if c not in skipped]
    results, teacher_acc = run_all(plan, combinations, workers)
    print(f"## Planted-teacher bench ({'QUICK' if quick else 'full'}, {time.time() - started:.0f} s)\n")
    notes += [f"{a}: n/a, {why}" for a, why in skipped.items()]
    if notes:
        print("\n".join(f"- {n}" for n in notes) + "\n")
    figures = {}
    for setup in plan:
        lines, figures[setup.name] = setup_report(setup, results, teacher_acc[setup.name], skipped)
        figures[setup.name]["done"] = done_means(figures[setup.name])
        print("\n".join(lines))
    print(json.dumps({"bench": "planted", "quick": quick, "seconds": round(time.time() - started),
                      "skipped": skipped, "datasets": figures}, sort_keys=False))


if __name__ == "__main__":
    main()
