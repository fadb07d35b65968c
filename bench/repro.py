"""Reproduction on real images: `make repro` (QUICK=1: a short version that checks the set-up, not the claims).

On ../shared/data/cifar10-jpg (3,000 train JPEGs, 10% of them held out for validation, 1,000 test), with the
akamaster CIFAR-10 checkpoints as teachers and a resnet20 student trained from scratch, three seeds each:

  student alone; KD (resnet56, RepDistiller's CE 0.1 + KD 0.9); AT (resnet56, layer1-3); AT + KD weighted
  equal, hand-tuned (the first seed paper's AT 1000, KD 0.1) and adaptive_distillation; three teachers (resnet56,
  resnet32, resnet20), one KD path each, weighted equal, with AMTML, with the per-sample multi-teacher methods
  (CA-MKD, EBKD, min_ce) and uncertainty.

A row whose weighting or method is not registered is reported as skipped. Teachers' outputs are cached in
bench/.workspace-repro and reused by every run, with one fixed flip_crop view per epoch (teacher_cache.views), so
distilled students see as many different crops as the student alone does.
Output: a Markdown table (mean +- std over seeds of the final and the best test accuracy, median epoch time),
then one JSON line. Environment: QUICK=1, SEEDS, EPOCHS, TRAIN_IMAGES, WORKERS (parallel runs, default 1).
Each finished run is recorded in bench/.workspace-repro/finished.jsonl under a hash of its spec, and a rerun reuses
it: on a CPU the full table takes hours, so it can be built over several sittings (FRESH=1 ignores the record).
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script (and re-imported by spawned workers): engine must import

from bench.pathscope_runs import EpochClock  # noqa: E402
from engine.methods import METHODS  # noqa: E402
from engine.runner import execute_run  # noqa: E402
from engine.spec import parse_spec  # noqa: E402
from engine.train import MAIN_PHASE  # noqa: E402
from engine.vocabulary import TEST_ACC  # noqa: E402
from engine.weightings import WEIGHTINGS  # noqa: E402

QUICK = os.environ.get("QUICK", "") not in ("", "0")
SEEDS = tuple(range(int(os.environ.get("SEEDS", 2 if QUICK else 3))))
EPOCHS = int(os.environ.get("EPOCHS", 2 if QUICK else 30))
TRAIN_IMAGES = int(os.environ.get("TRAIN_IMAGES", 600 if QUICK else 2_700))  # 2,700: all after the 10% val split
WORKERS = int(os.environ.get("WORKERS", 1))
FRESH = os.environ.get("FRESH", "") not in ("", "0")
HOME = ROOT / "bench" / ".workspace-repro"
FINISHED = HOME / "finished.jsonl"
DATA = "../shared/data/cifar10-jpg"
CHECKPOINTS = "../shared/data/checkpoints/akamaster-cifar10"
TEACHERS = {"r56": ("resnet56", "resnet56-4bfd9763.th"), "r32": ("resnet32", "resnet32-d509ac18.th"),
            "r20": ("resnet20", "resnet20-12fca82f.th")}
AT_SPOTS = ("layer1", "layer2", "layer3")
BATCH_SIZE = 128
MAX_VIEWS = 64  # the spec's bound on teacher_cache.views


@dataclass(frozen=True)
class Row:
    label: str
    teachers: tuple[str, ...]
    paths: tuple[dict, ...]
    weighting: str = "equal"
    method: str | None = None
    weighting_params: tuple[tuple[str, Any], ...] = ()  # a tuple, so rows stay hashable and frozen


@dataclass
class Outcome:
    final: list[float] = field(default_factory=list)  # test accuracy at the end, per seed
    best: list[float] = field(default_factory=list)  # best epoch's test accuracy, per seed
    epoch_s: list[float] = field(default_factory=list)
    note: str = ""


def kd_path(teacher: str, weight: float | None = None) -> dict:
    return {"id": f"{teacher}-kd", "teacher": teacher, "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc",
            "weight": weight}


def at_paths(teacher: str, weight: float | None = None) -> list[dict]:
    return [{"id": f"{teacher}-at-{spot}", "teacher": teacher, "distiller": "at", "teacher_spot": spot,
             "student_spot": spot, "weight": weight} for spot in AT_SPOTS]


def rows() -> list[Row]:
    three = tuple(kd_path(t) for t in TEACHERS)
    at_kd = (*at_paths("r56"), kd_path("r56"))
    hand_tuned = (*at_paths("r56", 1000.0), kd_path("r56", 0.1))
    return [
        Row("student alone", (), ()),
        # RepDistiller's KD recipe (CE 0.1 + KD 0.9): with CE 1 + KD 1, KD only tied the student alone at 15 epochs
        Row("KD", ("r56",), (kd_path("r56", 0.9),), weighting="fixed", weighting_params=(("task_weight", 0.1),)),
        Row("AT", ("r56",), tuple(at_paths("r56")), weighting="fixed"),
        Row("AT+KD equal", ("r56",), at_kd),
        Row("AT+KD hand-tuned (AT 1000, KD 0.1)", ("r56",), hand_tuned, weighting="fixed"),
        Row("AT+KD adaptive_distillation", ("r56",), at_kd, weighting="adaptive_distillation"),
        Row("3 teachers equal", tuple(TEACHERS), three),
        Row("3 teachers AMTML", tuple(TEACHERS), three, weighting="fixed", method="amtml"),
        Row("3 teachers CA-MKD", tuple(TEACHERS), three, weighting="fixed", method="camkd"),
        Row("3 teachers EBKD", tuple(TEACHERS), three, weighting="fixed", method="ebkd"),
        Row("3 teachers min_ce", tuple(TEACHERS), three, weighting="fixed", method="min_ce"),
        Row("3 teachers uncertainty", tuple(TEACHERS), three, weighting="uncertainty"),
    ]


def spec_for(row: Row, seed: int) -> dict[str, Any]:
    teachers = [{"id": t, "arch": TEACHERS[t][0],
                 "source": {"kind": "checkpoint", "path": f"{CHECKPOINTS}/{TEACHERS[t][1]}"}} for t in row.teachers]
    paths = [{k: v for k, v in p.items() if v is not None} for p in row.paths]
    return {
        "name": f"repro {row.label} seed {seed}",
        "dataset": {"name": "image_folder", "root": DATA, "val_fraction": 0.1, "normalize": "imagenet",
                    "augment": "flip_crop", "batch_size": BATCH_SIZE, "train_size": TRAIN_IMAGES},
        "teachers": teachers, "student": {"arch": "resnet20", "source": {"kind": "scratch"}},
        "paths": paths, "weighting": {"name": row.weighting, "params": dict(row.weighting_params)},
        "method": {"name": row.method} if row.method else None,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
        "schedule": {"name": "cosine"}, "epochs": EPOCHS, "seed": seed, "log_every": 10, "device": "auto",
        # One cached augmented view per epoch. With the default 4 views a distilled student sees 4 fixed crops per
        # image while the student alone sees a fresh one every epoch: with 4 views KD trailed the student alone
        # at 15 epochs (seed 0: 49.4% vs 50.6%), so the rows did not differ by distillation alone.
        "teacher_cache": {"enabled": True, "views": min(EPOCHS, MAX_VIEWS)},
    }


def missing_plugin(row: Row) -> str | None:
    if row.weighting not in WEIGHTINGS:
        return f"weighting {row.weighting!r} is not registered"
    if row.method is not None and row.method not in METHODS:
        return f"method {row.method!r} is not registered"
    return None


def spec_key(row: Row, seed: int) -> str:
    """What identifies a finished run: its whole spec, so a changed recipe is never answered from the record."""
    return hashlib.sha256(json.dumps(spec_for(row, seed), sort_keys=True).encode()).hexdigest()[:16]


def finished_runs() -> dict[str, tuple[float, float, float]]:
    if FRESH or not FINISHED.exists():
        return {}
    records = (json.loads(line) for line in FINISHED.read_text().splitlines() if line.strip())
    return {r["key"]: (r["final"], r["best"], r["epoch_s"]) for r in records}


def run_one(row: Row, seed: int) -> tuple[float, float, float]:
    """(final test accuracy, best epoch's test accuracy, median epoch seconds) of one run, then recorded."""
    os.chdir(ROOT)  # the data and checkpoint paths are relative to the project root
    reporter = EpochClock(math.ceil(TRAIN_IMAGES / BATCH_SIZE))
    run_id = f"{row.label}-s{seed}".replace(" ", "_").replace("/", "_")
    shutil.rmtree(HOME / "runs" / run_id, ignore_errors=True)  # a fresh run, never a resumed one
    result = execute_run(parse_spec(spec_for(row, seed)), run_id, HOME, reporter)
    accuracies = reporter.series(TEST_ACC, MAIN_PHASE) or [result["test_acc"]]
    figures = result["test_acc"], max(accuracies), statistics.median(reporter.epoch_s or [float("nan")])
    with FINISHED.open("a") as record:  # one short line per run: appends from parallel workers do not interleave
        record.write(json.dumps({"key": spec_key(row, seed), "run": f"{row.label} seed {seed}",
                                 "final": figures[0], "best": figures[1], "epoch_s": figures[2]}) + "\n")
    return figures


def mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} ± {100 * spread:.2f}"


def measure(all_rows: list[Row]) -> dict[str, Outcome]:
    outcomes = {row.label: Outcome() for row in all_rows}
    finished = finished_runs()
    runnable = []
    for row in all_rows:
        missing = missing_plugin(row)
        if missing:
            outcomes[row.label].note = f"skipped: {missing}"
            continue
        for seed in SEEDS:
            key = spec_key(row, seed)
            if key in finished:
                collect(outcomes[row.label], row, seed, lambda key=key: finished[key])
            else:
                runnable.append((row, seed))
    log(f"{len(runnable)} runs to train ({len(finished)} recorded): {len(SEEDS)} seeds x {EPOCHS} epochs on "
        f"{TRAIN_IMAGES} train images")
    # The first run builds the teachers' caches; later ones reuse them, in parallel if asked (spawned workers:
    # a forked child of a process that has run torch can deadlock in its thread pool).
    first, rest = runnable[:1], runnable[1:]
    for row, seed in first if WORKERS > 1 else runnable:
        collect(outcomes[row.label], row, seed, lambda row=row, seed=seed: run_one(row, seed))
    if WORKERS > 1:
        with ProcessPoolExecutor(max_workers=WORKERS, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [(row, seed, pool.submit(run_one, row, seed)) for row, seed in rest]
            for row, seed, future in futures:
                collect(outcomes[row.label], row, seed, future.result)
    return outcomes


def collect(outcome: Outcome, row: Row, seed: int, compute) -> None:
    """Record one run's figures; a failed run is noted in its row instead of ending the bench."""
    try:
        final, best, epoch_s = compute()
    except Exception as err:  # noqa: BLE001
        outcome.note = f"failed: {type(err).__name__}: {err}"
        log(f"{row.label} seed {seed} failed: {err}")
        return
    outcome.final.append(final)
    outcome.best.append(best)
    outcome.epoch_s.append(epoch_s)
    log(f"{row.label} seed {seed}: final {100 * final:.2f}%, best {100 * best:.2f}%, epoch {epoch_s:.1f} s")


def table(outcomes: dict[str, Outcome]) -> str:
    lines = ["| configuration | final test acc (%) | best test acc (%) | epoch (s) | notes |", "|---|---|---|---|---|"]
    for label, o in outcomes.items():
        epoch = f"{statistics.median(o.epoch_s):.1f}" if o.epoch_s else "n/a"
        lines.append(f"| {label} | {mean_std(o.final)} | {mean_std(o.best)} | {epoch} | {o.note} |")
    return "\n".join(lines)


def summary(outcomes: dict[str, Outcome], seconds: float) -> dict[str, Any]:
    means = {label: round(100 * statistics.mean(o.final), 2) for label, o in outcomes.items() if o.final}
    kd_beats_alone = ("KD" in means and "student alone" in means) and means["KD"] > means["student alone"]
    return {"bench": "repro", "quick": QUICK, "seeds": len(SEEDS), "epochs": EPOCHS, "train_images": TRAIN_IMAGES,
            "seconds": round(seconds), "final_test_acc_mean": means, "kd_beats_student_alone": kd_beats_alone,
            "skipped": {label: o.note for label, o in outcomes.items() if o.note}}


def log(message: str) -> None:
    print(f"[repro {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> None:
    started = time.time()
    outcomes = measure(rows())
    print(table(outcomes))
    print(json.dumps(summary(outcomes, time.time() - started)))


if __name__ == "__main__":
    main()
