"""Speed bench: `make bench` (QUICK=1: fewer images and repeats, under three minutes).

For resnet56 -> resnet20 on 3x32x32 images and for digits, the median epoch time of
  (a) the floor: a plain PyTorch loop training the student with cross-entropy alone;
  (b) naive KD: the same loop plus the teacher's forward pass every step;
  (c) PathScope, one KD path, teacher outputs cached;
  (d) PathScope, 3 teachers x 6 paths (kd from each; at, fitnet, rkd on features), cached,
      with the equal and the adaptive_distillation aggregators;
  (e) (d) adaptive with the negative-transfer diagnostics at their default cadence;
  (f) torchdistill running the same single-path KD (resnet56 -> resnet20 only);
and (g) the Live page's server-side render time on a synthetic run of 8 paths x 50,000 logged steps.
Every configuration runs one warm-up epoch, then REPEATS timed ones; ratios compare medians measured
in this same run, since absolute times on a shared CPU drift. Progress goes to stderr; stdout gets
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
from bench.plain_loops import plain_epochs  # noqa: E402
from bench.torchdistill_env import time_torchdistill  # noqa: E402
from bench.workload import Workload, cifar_workload, digits_workload  # noqa: E402
from engine.spec import RunSpec  # noqa: E402

QUICK = os.environ.get("QUICK", "") not in ("", "0")
TRAIN_IMAGES = 1_000 if QUICK else 5_000  # QUICK stays under three minutes on this 2-core CPU
REPEATS = 2 if QUICK else 3
DIGITS_REPEATS = 5  # digits epochs take a fraction of a second: more repeats, same cost
LIVE_REPEATS = 5 if QUICK else 9
CIFAR_FEATURES = ("layer3", "layer2", "pool")  # at, fitnet, rkd spots of resnet20 and its teachers
DIGITS_FEATURES = ("conv2", "conv1", "pool")
TARGETS = {"cached_kd_vs_floor": 1.15, "multi_path_adaptive_vs_floor": 1.4, "cached_kd_vs_torchdistill": 0.6}
LIVE_TARGET_MS = 300.0


@dataclass
class Result:
    key: str  # JSON name
    label: str  # table row
    seconds: float | None  # median epoch; None: not measured
    note: str


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measured(key: str, label: str, timing: Callable[[], tuple[float | None, str]]) -> Result:
    """One row; a configuration that fails is reported in its row instead of ending the bench."""
    log(label)
    try:
        seconds, note = timing()
    except Exception as err:  # noqa: BLE001
        seconds, note = None, f"failed: {type(err).__name__}: {err}"
    log(f"  -> {f'{seconds:.2f} s' if seconds is not None else 'n/a'}; {note}")
    return Result(key, label, seconds, note)


def engine_row(workload: Workload, spec: RunSpec, home: Path, run_id: str) -> tuple[float, str]:
    timing: EngineTiming = time_engine(workload, spec, home, run_id)
    shares = ", ".join(f"{name} {share:.0f}%" for name, share in timing.shares.items() if share >= 1)
    cache = "reused" if timing.cache_s is None else f"built in {timing.cache_s:.1f} s, before timing"
    return timing.median_s, f"teacher cache {cache}; step time: {shares or 'not logged'}"


def training_results(workload: Workload, repeats: int, home: Path, features: tuple[str, str, str],
                     torchdistill: bool) -> list[Result]:
    epochs = repeats + 1  # the first epoch warms up and is left out
    tag = workload.key  # names the runs in the shared workspace
    multi = multi_paths(workload, features)
    results = [
        measured("floor", "(a) floor: plain loop, CE only",
                 lambda: (statistics.median(plain_epochs(workload, False, epochs)[1:]), "student alone")),
        measured("naive_kd", "(b) naive KD: plain loop + teacher forward",
                 lambda: (statistics.median(plain_epochs(workload, True, epochs)[1:]), "no cache")),
        measured("cached_kd", "(c) PathScope: 1 KD path, cached",
                 lambda: engine_row(workload, run_spec(workload, single_kd_paths(workload), "equal", epochs, False),
                                    home, f"{tag}-cached-kd")),
    ]
    for aggregator, key in (("equal", "multi_path_equal"), ("adaptive_distillation", "multi_path_adaptive")):
        results.append(measured(key, f"(d) PathScope: 3 teachers x 6 paths, {aggregator}, cached",
                                lambda a=aggregator: engine_row(workload, run_spec(workload, multi, a, epochs, False),
                                                                home, f"{tag}-multi-{a}")))
    diagnosed = run_spec(workload, multi, "adaptive_distillation", epochs, diagnostics=True)
    results.append(measured("multi_path_adaptive_diagnostics", "(e) (d) adaptive + diagnostics at default cadence",
                            lambda: engine_row(workload, diagnosed, home, f"{tag}-multi-diagnostics")))
    if torchdistill:
        results.append(measured("torchdistill", "(f) torchdistill: same single-path KD",
                                lambda: torchdistill_row(workload, epochs, home)))
    return results


def torchdistill_row(workload: Workload, epochs: int, scratch: Path) -> tuple[float | None, str]:
    timing = time_torchdistill(workload, epochs, scratch)
    return timing.median_s, timing.note


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
            f"first render (whole run read, {live.rows:,} rows) {_ms(live.apptest_first_ms)} in the app, "
            f"{_ms(live.first_ms)} direct. {live.apptest_note}").strip()


def summary(cifar: list[Result], digits: list[Result], live: live_page.LiveTimings, data: str,
            load: tuple[float, float]) -> dict:
    seconds = {r.key: r.seconds for r in cifar}
    out = {
        "quick": QUICK, "data": data, "train_images": TRAIN_IMAGES, "repeats": REPEATS,
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
    log(f"{'QUICK: ' if QUICK else ''}{TRAIN_IMAGES:,} images, {REPEATS} timed epochs per configuration, "
        f"{torch.get_num_threads()} threads, load average {load_start:.1f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="pathscope-bench-") as tmp:
        scratch = Path(tmp)
        cifar = cifar_workload(TRAIN_IMAGES, scratch / "teachers")
        digits = digits_workload(scratch / "teachers")
        cifar_results = training_results(cifar, REPEATS, scratch / "workspace", CIFAR_FEATURES, torchdistill=True)
        digits_results = training_results(digits, DIGITS_REPEATS, scratch / "workspace", DIGITS_FEATURES,
                                          torchdistill=False)
        log("(g) Live page: synthetic run, then renders")
        live = live_page.measure(scratch / "live", LIVE_REPEATS)
    sections = [(f"{cifar.name} ({cifar.data_note})", cifar_results),
                (f"{digits.name} ({digits.data_note})", digits_results)]
    print(table(sections, live))
    print(json.dumps(summary(cifar_results, digits_results, live, cifar.data_note, (load_start, os.getloadavg()[0]))))


if __name__ == "__main__":
    main()
