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

Ground truth (harm by ablation, paired by seed), the three detectors scored and the tables: bench/detector_scoring.py;
how far any rule on the probe's measures could go: bench/detector_separability.py.

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
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script (and re-imported by spawned workers): engine must import

from bench.detector_report import report  # noqa: E402
from bench.detector_scoring import CLEAN, EFFECTS_ONLY, oracle_paths  # noqa: E402
from bench.planted import fashion_available  # noqa: E402

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
PROBED_RUNS = ("full", EFFECTS_ONLY, "lookahead")  # the runs whose verdicts are scored or whose weighting probes
# (distiller, teacher spot, student spot) of every teacher's paths: two logit paths, two feature paths.
PATHS = (("kd", "fc", "fc"), ("logits", "fc", "fc"), ("at", "conv2", "conv2"), ("fitnet", "conv2", "conv2"))
QUICK_PATHS = tuple(p for p in PATHS if p[0] != "logits")  # a quarter fewer runs: kd stays the logit path
KIND_OF = {"noisy_labels": "label corruption", "permuted_labels": "label corruption",
           "under_trained": "weak teacher", "random_init": "weak teacher", "scaled_logits": "scaled logits",
           "corrupted_features": "corrupted features", "inverted_input": "input-domain shift",
           "rotated_input": "input-domain shift", "shortcut": "shortcut", "none": CLEAN}


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

    def path_ids(self) -> list[str]:
        """Every path of the scenario, both teachers'."""
        return [path_id(t, d, s) for t in ("good", self.other) for d, s, _ in self.paths]


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

    spec = parse_spec(spec_dict(sc, setting, "full", 0, sc.path_ids()))
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
    paths = sc.path_ids()
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


# ------------------------------------------------------------------ selection and entry point
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


def comma_list(text: str) -> list[str]:
    """DATASETS=a,b or SCENARIOS=a,b as a sorted list without blanks or repeats (the results file is named after
    it)."""
    return sorted({name.strip() for name in text.split(",") if name.strip()})


def results_file(quick: bool, datasets: list[str], seeds: int = 5) -> Path:
    """Where a run of this selection keeps its results (REPORT_ONLY=1 reads them back)."""
    parts = ["last_results", *(["quick"] if quick else []), *datasets, *([f"{seeds}seeds"] if seeds != 5 else [])]
    return HOME / f"{'_'.join(parts)}.json"


def main() -> None:
    quick = os.environ.get("QUICK", "") not in ("", "0")
    workers = int(os.environ.get("WORKERS", "2"))
    started = time.time()
    datasets = comma_list(os.environ.get("DATASETS", ""))
    only = comma_list(os.environ.get("SCENARIOS", ""))
    plan, notes = selected_plan(quick, datasets, only)
    saved = results_file(quick, datasets + only, len(SEEDS))
    sets = settings(quick)
    steps = {name: total_steps(sets[name]) for name in {s.dataset_name for s in plan}}
    if os.environ.get("REPORT_ONLY", "") not in ("", "0"):  # re-render the last run's tables, train nothing
        if not saved.exists():
            sys.exit(f"REPORT_ONLY: no results of this selection yet ({saved}); run the bench without it first")
        data = json.loads(saved.read_text())
        report(plan, steps, data["results"], data["teacher_acc"], data["seconds"], quick, notes)
        return
    results, teacher_acc = run_all(plan, sets, workers)
    seconds = time.time() - started
    # Kept for REPORT_ONLY=1 and a look at the raw verdicts (every run's verdict_details) afterwards.
    saved.write_text(json.dumps({"teacher_acc": teacher_acc, "results": results, "seconds": seconds}))
    report(plan, steps, results, teacher_acc, seconds, quick, notes)


if __name__ == "__main__":
    main()
