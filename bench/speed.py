"""Speed bench: `make bench` (QUICK=1: fewer images and repeats, under three minutes).

For resnet56 -> resnet20 on 3x32x32 images and for digits, the median epoch time of
  (a) the floor: a plain PyTorch loop training the student with cross-entropy alone;
  (b) naive KD: the same loop plus the teacher's forward pass every step;
  (c) PathScope, one KD path, teacher outputs cached;
  (d) PathScope, 3 teachers x 6 paths (kd from each; at, fitnet, rkd on features), cached,
      with the equal and the adaptive_distillation weightings;
  (d0) digits only: a plain loop training CE + the same six losses (PathScope's distiller modules, the
      teachers' taps computed up front): what (d) costs without any engine, so (d) / (d0) is the engine's share;
  (e) (d) adaptive with the negative-transfer diagnostics at their default cadence;
  (f) torchdistill running the same single-path KD (resnet56 -> resnet20 only);
and (g) the Live page's server-side render time on a synthetic run of 8 paths x 50,000 logged steps.
Every configuration runs one warm-up epoch, then REPEATS timed ones, once in each of ROUNDS rounds
that take the configurations in turn; ratios compare medians measured in this same run, since
absolute times on a shared CPU drift. Progress goes to stderr; stdout gets
one Markdown table and, last, one JSON line.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from bench import live_page  # noqa: E402
from bench.pathscope_runs import EngineTiming, multi_paths, run_spec, single_kd_paths, time_engine  # noqa: E402
from bench.plain_loops import plain_epochs, same_objective_epochs  # noqa: E402
from bench.torchdistill_env import time_torchdistill  # noqa: E402
from bench.workload import Workload, cifar_workload, digits_workload  # noqa: E402
from engine.spec import RunSpec  # noqa: E402

QUICK = os.environ.get("QUICK", "") not in ("", "0")
TRAIN_IMAGES = 768 if QUICK else 5_000  # QUICK takes under three minutes on this 2-core CPU
REPEATS = 1 if QUICK else 3  # timed epochs per configuration and round
ROUNDS = 2 if QUICK else 3  # every configuration runs once per round, interleaved with the others
DIGITS_REPEATS = 3 if QUICK else 5  # digits epochs take a fraction of a second: more repeats, same cost
LIVE_REPEATS = 5 if QUICK else 9
CIFAR_FEATURES = ("layer3", "layer2", "pool")  # at, fitnet, rkd spots of resnet20 and its teachers
DIGITS_FEATURES = ("conv2", "conv1", "pool")
TARGETS = {"cached_kd_vs_floor": 1.15, "multi_path_adaptive_vs_floor": 1.4, "cached_kd_vs_torchdistill": 0.6}
LIVE_TARGET_MS = 300.0


@dataclass
class Result:
    key: str  # JSON name
    label: str  # table row
    seconds: float | None  # median timed epoch over every round; None: not measured
    note: str


# A configuration's timing: the seconds of its timed epochs (warm-up left out), and a note for the table.
Timing = Callable[[int], tuple[list[float], str]]


@dataclass
class Config:
    key: str
    label: str
    timing: Timing  # called with the round number, once per round
    first_round_only: bool = False  # QUICK: rows that are not targets, or far from theirs, run once


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure_rounds(configs: list[Config], rounds: int) -> list[Result]:
    """Every configuration once per round, in turn, and the median epoch of each over all rounds.

    Interleaving matters on a shared CPU: a slow minute of the machine then stretches one round of
    every configuration instead of all the epochs of one, so the ratios survive it. A configuration
    that fails is reported in its row instead of ending the bench.
    """
    epochs: dict[str, list[float]] = {c.key: [] for c in configs}
    notes: dict[str, str] = {}
    for number in range(rounds):
        for config in configs:
            if notes.get(config.key, "").startswith("failed") or (config.first_round_only and number > 0):
                continue
            log(f"round {number + 1}/{rounds}: {config.label}")
            try:
                seconds, notes[config.key] = config.timing(number)
            except Exception as err:  # noqa: BLE001
                seconds, notes[config.key] = [], f"failed: {type(err).__name__}: {err}"
            epochs[config.key] += seconds
            log(f"  -> {', '.join(f'{s:.2f} s' for s in seconds) or 'n/a'}; {notes[config.key]}")
    return [Result(c.key, c.label, statistics.median(epochs[c.key]) if epochs[c.key] else None, notes[c.key])
            for c in configs]


def engine_timing(workload: Workload, spec: RunSpec, home: Path, run_id: str) -> tuple[list[float], str]:
    timing: EngineTiming = time_engine(workload, spec, home, run_id)
    shares = ", ".join(f"{name} {share:.0f}%" for name, share in timing.shares.items() if share >= 1)
    cache = "reused" if timing.cache_s is None else f"built in {timing.cache_s:.1f} s, before timing"
    return timing.epoch_s, f"teacher cache {cache}; step time: {shares or 'not logged'}"


def training_configs(workload: Workload, repeats: int, home: Path, features: tuple[str, str, str],
                     torchdistill: bool, same_objective: bool = False) -> list[Config]:
    epochs = repeats + 1  # the first epoch warms up and is left out
    tag = workload.key  # names the runs in the shared workspace

    def plain(with_teacher: bool, note: str) -> Timing:
        return lambda _round: (plain_epochs(workload, with_teacher, epochs)[1:], note)

    def engine(paths: list[dict], weighting: str, diagnostics: bool, name: str) -> Timing:
        spec = run_spec(workload, paths, weighting, epochs, diagnostics)
        return lambda number: engine_timing(workload, spec, home, f"{tag}-{name}-r{number}")

    multi = multi_paths(workload, features)
    configs = [
        Config("floor", "(a) floor: plain loop, CE only", plain(False, "student alone")),
        Config("naive_kd", "(b) naive KD: plain loop + teacher forward", plain(True, "no cache")),
        Config("cached_kd", "(c) PathScope: 1 KD path, cached",
               engine(single_kd_paths(workload), "equal", False, "cached-kd")),
        Config("multi_path_equal", "(d) PathScope: 3 teachers x 6 paths, equal, cached",
               engine(multi, "equal", False, "multi-equal"), first_round_only=QUICK),
        Config("multi_path_adaptive", "(d) PathScope: 3 teachers x 6 paths, adaptive_distillation, cached",
               engine(multi, "adaptive_distillation", False, "multi-adaptive")),
        Config("multi_path_adaptive_diagnostics", "(e) (d) adaptive + diagnostics at default cadence",
               engine(multi, "adaptive_distillation", True, "multi-diagnostics")),
    ]
    if same_objective:  # its forward hooks know small_cnn's module names only
        configs.insert(3, Config("same_objective", "(d0) plain loop: CE + the same 6 losses, unweighted",
                                 lambda _round: (same_objective_epochs(workload, multi, epochs)[1:],
                                                 "PathScope's distiller modules, teacher taps computed up front")))
    if torchdistill:
        configs.append(Config("torchdistill", "(f) torchdistill: same single-path KD",
                              lambda _round: torchdistill_epochs(workload, epochs, home), first_round_only=QUICK))
    return configs


def torchdistill_epochs(workload: Workload, epochs: int, scratch: Path) -> tuple[list[float], str]:
    timing = time_torchdistill(workload, epochs, scratch)
    return timing.epoch_s or [], timing.note


def ratio(results: list[Result], key: str, base: str) -> float | None:
    values = {r.key: r.seconds for r in results}
    if values.get(key) is None or not values.get(base):
        return None
    return values[key] / values[base]


def table(sections: list[tuple[str, list[Result]]], live: live_page.LiveTimings) -> str:
    lines = ["| workload | config | median epoch | x floor | notes |", "|---|---|---|---|---|"]
    for workload, results in sections:
        for r in results:
            seconds = f"{r.seconds:.2f} s" if r.seconds is not None else "n/a"
            x_floor = ratio(results, r.key, "floor")
            lines.append(f"| {workload} | {r.label} | {seconds} | {f'{x_floor:.2f}' if x_floor else ''} | {r.note} |")
    lines.append(f"| Live page, {live_page.PATHS} paths x {live_page.STEPS:,} steps | (g) server-side render "
                 f"(AppTest) | {_ms(live.apptest_polling_ms)} | | {live_note(live)} |")
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return f"{value:.0f} ms" if value is not None else "n/a"


def live_note(live: live_page.LiveTimings) -> str:
    return (f"median of polls with a new step each; data + figures + JSON alone {_ms(live.polling_ms)}; "
            f"first render (first, downsampled read of {live.rows:,} rows) {_ms(live.apptest_first_ms)} in the app, "
            f"{_ms(live.first_ms)} direct. {live.apptest_note}").strip()


def summary(cifar: list[Result], digits: list[Result], live: live_page.LiveTimings, data: str,
            load: tuple[float, float]) -> dict:
    seconds = {r.key: r.seconds for r in cifar}
    out = {
        "quick": QUICK, "data": data, "train_images": TRAIN_IMAGES, "repeats": REPEATS, "rounds": ROUNDS,
        "load_average_start_end": list(load),  # other work on the machine stretches every absolute time
        "cached_kd_vs_floor": ratio(cifar, "cached_kd", "floor"),
        "multi_path_adaptive_vs_floor": ratio(cifar, "multi_path_adaptive", "floor"),
        "cached_kd_vs_torchdistill": ratio(cifar, "cached_kd", "torchdistill"),
        "live_page_ms": live.apptest_polling_ms,
        "naive_kd_vs_floor": ratio(cifar, "naive_kd", "floor"),
        "multi_path_equal_vs_floor": ratio(cifar, "multi_path_equal", "floor"),
        "multi_path_adaptive_diagnostics_vs_floor": ratio(cifar, "multi_path_adaptive_diagnostics", "floor"),
        "epoch_s": seconds,
        "live_page_direct_ms": live.polling_ms, "live_page_first_ms": live.apptest_first_ms,
        "digits": {f"{r.key}_vs_floor": ratio(digits, r.key, "floor") for r in digits if r.key != "floor"},
        # the engine's own share of (d): 1.0 would be a plain loop computing the same losses
        "digits_multi_path_equal_vs_same_objective": ratio(digits, "multi_path_equal", "same_objective"),
    }
    met = {key: out[key] is not None and out[key] <= limit for key, limit in TARGETS.items()}
    met["live_page_ms"] = live.apptest_polling_ms is not None and live.apptest_polling_ms < LIVE_TARGET_MS
    out["targets_met"] = met
    return rounded(out)


def rounded(value: object) -> object:
    """Floats to 3 decimals, through nested dicts: the JSON line stays readable."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


def main() -> None:
    load_start = os.getloadavg()[0]
    log(f"{'QUICK: ' if QUICK else ''}{TRAIN_IMAGES:,} images, {REPEATS} timed epochs per configuration "
        f"in each of {ROUNDS} rounds, "
        f"{torch.get_num_threads()} threads, load average {load_start:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="pathscope-bench-") as tmp:
        scratch = Path(tmp)
        cifar = cifar_workload(TRAIN_IMAGES, scratch / "teachers")
        digits = digits_workload(scratch / "teachers")
        cifar_results = measure_rounds(training_configs(cifar, REPEATS, scratch / "workspace", CIFAR_FEATURES,
                                                        torchdistill=True), ROUNDS)
        digits_results = measure_rounds(training_configs(digits, DIGITS_REPEATS, scratch / "workspace",
                                                         DIGITS_FEATURES, torchdistill=False, same_objective=True),
                                        ROUNDS)
        log("(g) Live page: synthetic run, then renders")
        live = live_page.measure(scratch / "live", LIVE_REPEATS)
    sections = [(f"{cifar.name} ({cifar.data_note})", cifar_results),
                (f"{digits.name} ({digits.data_note})", digits_results)]
    print(table(sections, live))
    print(json.dumps(summary(cifar_results, digits_results, live, cifar.data_note, (load_start, os.getloadavg()[0]))))


if __name__ == "__main__":
    main()
