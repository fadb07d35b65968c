"""Data bench: `make bench-data` (QUICK=1: under about three minutes on this project's 2-core CPU).

(1) Time to first step on the 4,000-image CIFAR-10 JPEG folder (../shared/data/cifar10-jpg,
    train/ and test/), resnet56 (akamaster checkpoint) -> resnet20, one KD path: cold (an empty
    workspace: decode the JPEGs, build the teacher cache) and warm (the same workspace again).
(2) Epoch time of that run against the plain PyTorch floor (CE only, bench/plain_loops.py) on the
    same in-memory tensors, interleaved in rounds; medians and their ratio.
(3) A generated folder of 20,000 64x64 JPEGs trained (small_cnn of width 4, flip_crop, 2 loader workers) with
    stream: auto under a small memory_limit_mb, so it streams, then the same run with stream: off,
    each in a child process: the peak proportional set size (PSS: shared pages counted once) of its
    whole process tree (the run and its DataLoader workers) over the child's baseline after its
    imports, against the limit and against the size of the images in memory. The difference
    between the two runs is what holding the images costs; what the streamed run still adds is
    the model's own (activations of a 512-image evaluation batch; at width 16 they reach about 400 MB)
    and the loader's batches, whatever the folder's size.
Prints a Markdown table and a JSON line last. No figure here is asserted: the machine is shared.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QUICK = os.environ.get("QUICK", "") not in ("", "0")
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpg"
RESNET56 = ROOT.parent / "shared" / "data" / "checkpoints" / "akamaster-cifar10" / "resnet56-4bfd9763.th"
ROUNDS = 1 if QUICK else 3
TIMED_EPOCHS = 1 if QUICK else 2  # per round
WARMUP_EPOCHS = 1  # per round, before the timed ones: a new model's first epoch runs up to 2x slower
BIG_IMAGES = 20_000
BIG_SIDE = 64
BIG_LIMIT_MB = 256
BIG_TRAIN = 2_000 if QUICK else None  # QUICK: one epoch over 2,000 of the streamed training images
BIG_WIDTH = 4  # a narrow student: its activations (a 512-image evaluation batch at 64 px) stay well below the data
SAMPLE_S = 0.1


def log(message: str) -> None:
    print(f"[bench-data {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def kd_spec(epochs: int, log_every: int = 10) -> dict:
    return {
        "name": "data bench", "device": "cpu", "epochs": epochs, "seed": 0, "log_every": log_every,
        "dataset": {"name": "image_folder", "root": str(CIFAR), "normalize": "imagenet", "batch_size": 64},
        "teachers": [{"id": "r56", "arch": "resnet56", "source": {"kind": "checkpoint", "path": str(RESNET56)}}],
        "student": {"arch": "resnet20"},
        "paths": [{"id": "r56-kd", "teacher": "r56", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}],
    }


# ---------------------------------------------------------------- (1) time to first step
def first_step(home: Path, run_id: str) -> dict:
    from engine.runner import execute_run
    from engine.spec import parse_spec
    from engine.train import MAIN_PHASE, NullReporter

    class Stop(Exception):
        pass

    class FirstStep(NullReporter):
        def __init__(self) -> None:
            super().__init__()
            self.at: float | None = None

        def log(self, phase, step, epoch, values):
            super().log(phase, step, epoch, values)
            if phase == MAIN_PHASE and self.at is None:
                self.at = time.perf_counter()
                raise Stop

    reporter = FirstStep()
    started = time.perf_counter()
    try:
        execute_run(parse_spec(kd_spec(1, log_every=1)), run_id, home, reporter)
    except Stop:
        pass
    events = [m for _, m in reporter.events]
    return {"seconds": reporter.at - started,
            "decode": next((m for m in events if "decoded" in m), ""),
            "cache": next((m for m in events if m.startswith("teacher cache:")), "")}


# ---------------------------------------------------------------- (2) epoch time against the floor
def epoch_rounds(home: Path) -> tuple[list[float], list[float], str]:
    import torch

    from bench.pathscope_runs import EpochClock
    from bench.plain_loops import epoch_seconds
    from engine.data import load_dataset
    from engine.models import build_model
    from engine.runner import execute_run
    from engine.spec import parse_spec

    spec = parse_spec(kd_spec(WARMUP_EPOCHS + TIMED_EPOCHS))
    bundle = load_dataset(spec.dataset, home / "cache")
    steps = math.ceil(len(bundle.train) / spec.dataset.batch_size)
    floor, engine = [], []
    for number in range(ROUNDS):
        # the floor: PyTorch's default kernels, as plain PyTorch runs (execute_run turns deterministic ones on)
        torch.use_deterministic_algorithms(False)
        torch.manual_seed(0)
        student = build_model("resnet20", 10, 3, 32, {})
        optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        generator = torch.Generator().manual_seed(number)
        seconds = [epoch_seconds(student, None, bundle.train.x, bundle.train.y, optimizer, generator)
                   for _ in range(WARMUP_EPOCHS + TIMED_EPOCHS)][WARMUP_EPOCHS:]
        floor += seconds
        log(f"round {number + 1}/{ROUNDS}: floor {', '.join(f'{s:.2f} s' for s in seconds)}")
        clock = EpochClock(steps)
        execute_run(spec, f"epochs-r{number}", home, clock)
        engine += clock.epoch_s[WARMUP_EPOCHS:]
        log(f"round {number + 1}/{ROUNDS}: PathScope "
            f"{', '.join(f'{s:.2f} s' for s in clock.epoch_s[WARMUP_EPOCHS:])}")
    return floor, engine, f"{len(bundle.train):,} train images, {steps} steps of 64"


# ---------------------------------------------------------------- (3) 20,000 images, streamed
def make_big_folder(root: Path) -> float:
    """BIG_IMAGES seeded 64x64 JPEGs in 10 class folders (kept between bench runs); seconds it took."""
    from PIL import Image

    marker = root / ".complete"
    if marker.exists():
        return 0.0
    started = time.time()
    rng = np.random.default_rng(0)
    per_class = BIG_IMAGES // 10
    for c in range(10):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # a class's colour layout, blurred up, plus noise
        for i in range(per_class):
            noise = rng.integers(-40, 40, (BIG_SIDE, BIG_SIDE, 3))
            up = np.kron(base, np.ones((BIG_SIDE // 8, BIG_SIDE // 8, 1), dtype=np.int64))
            Image.fromarray(np.clip(up + noise, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    marker.write_text("ok")
    return time.time() - started


def big_spec(root: Path, stream: str) -> dict:
    dataset = {"name": "image_folder", "root": str(root), "stream": stream, "memory_limit_mb": BIG_LIMIT_MB,
               "batch_size": 64, "loader_workers": 2, "augment": "flip_crop"}
    if BIG_TRAIN:
        dataset["train_size"] = BIG_TRAIN
    return {"name": f"big {stream}", "device": "cpu", "epochs": 1, "seed": 0, "log_every": 20, "dataset": dataset,
            "student": {"arch": "small_cnn", "arch_params": {"width": BIG_WIDTH}}}


def child_run(spec_json: str, home: str) -> None:
    """In the measured child: import, say 'ready' (the baseline), run, say 'done' with the result."""
    from engine.runner import execute_run
    from engine.spec import parse_spec
    from engine.store import init_workspace
    from engine.train import NullReporter

    spec = parse_spec(json.loads(spec_json))
    init_workspace(Path(home))
    print("ready", flush=True)
    reporter = NullReporter()
    started = time.time()
    result = execute_run(spec, "big", Path(home), reporter)
    notes = [m for _, m in reporter.events if m.startswith("image_folder")]
    print("done " + json.dumps({"seconds": time.time() - started, "test_acc": result["test_acc"], "notes": notes}),
          flush=True)


def tree_pss(pid: int) -> tuple[int, int]:
    """(PSS of the process and its descendants, number of processes), bytes."""
    import psutil

    try:
        top = psutil.Process(pid)
        procs = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total, len(procs)


def measured_run(spec: dict, home: Path) -> dict:
    child = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec), str(home)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    state = {"baseline": None, "peak": 0, "procs": 0, "result": None}

    def read() -> None:
        for line in child.stdout:
            if line.startswith("ready"):
                state["baseline"] = tree_pss(child.pid)[0]
            elif line.startswith("done "):
                state["result"] = json.loads(line[5:])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while child.poll() is None:
        pss, procs = tree_pss(child.pid)
        if state["baseline"] is not None and pss > state["peak"]:
            state["peak"], state["procs"] = pss, max(state["procs"], procs)
        time.sleep(SAMPLE_S)
    reader.join()
    if child.returncode != 0 or state["result"] is None:
        raise RuntimeError(f"the measured run failed (exit {child.returncode})")
    return state


def big_folder(scratch: Path) -> dict:
    root = Path(tempfile.gettempdir()) / f"pathscope-bench-{BIG_IMAGES}-{BIG_SIDE}px"
    made = make_big_folder(root)
    log(f"(3) {BIG_IMAGES:,} JPEGs in {root} ({'made in %.0f s' % made if made else 'reused'})")
    test = round(0.2 * BIG_IMAGES)  # the spec's default fractions: test 20%, then val 10% of the rest
    val = round(0.1 * (BIG_IMAGES - test))
    used = (BIG_TRAIN or BIG_IMAGES - test - val) + val + test
    out = {"images": BIG_IMAGES, "used": used, "side": BIG_SIDE, "limit_mb": BIG_LIMIT_MB,
           "in_memory_mb": used * 3 * BIG_SIDE * BIG_SIDE * 4 / 2**20, "train_size": BIG_TRAIN}
    for stream in ("auto", "off"):
        home = scratch / f"big-{stream}"
        state = measured_run(big_spec(root, stream), home)
        mb = lambda b: b / 2**20  # noqa: E731
        out[stream] = {"baseline_mb": mb(state["baseline"]), "peak_mb": mb(state["peak"]),
                       "growth_mb": mb(state["peak"] - state["baseline"]), "processes": state["procs"],
                       "streamed": any("streaming from disk" in n for n in state["result"]["notes"]),
                       **state["result"]}
        log(f"(3) stream {stream}: peak {mb(state['peak']):.0f} MB, baseline {mb(state['baseline']):.0f} MB, "
            f"{state['result']['seconds']:.0f} s; {state['result']['notes']}")
    return out


# ---------------------------------------------------------------- report
def main() -> None:
    if not CIFAR.is_dir() or not RESNET56.is_file():
        sys.exit(f"bench-data needs {CIFAR} and {RESNET56} (../shared/data beside the project)")
    import torch

    log(f"{'QUICK: ' if QUICK else ''}{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="pathscope-bench-data-") as tmp:
        scratch = Path(tmp)
        from engine.store import init_workspace

        home = scratch / "workspace"
        init_workspace(home)
        log("(1) time to first step, cold then warm")
        cold = first_step(home, "first-cold")
        warm = first_step(home, "first-warm")
        log(f"(1) cold {cold['seconds']:.1f} s ({cold['decode']}; {cold['cache']}); warm {warm['seconds']:.1f} s")
        log("(2) epoch time against the plain PyTorch floor")
        floor, engine, what = epoch_rounds(home)
        big = big_folder(scratch)
    floor_s, engine_s = statistics.median(floor), statistics.median(engine)
    rows = [
        ("(1) time to first step, cold (empty workspace: decode + teacher cache)", f"{cold['seconds']:.1f} s"),
        ("(1) time to first step, warm (decoded images and teacher cache reused)", f"{warm['seconds']:.1f} s"),
        (f"(2) floor: plain PyTorch CE loop, resnet20 ({what})", f"{floor_s:.2f} s per epoch"),
        ("(2) PathScope resnet56 -> resnet20, 1 KD path, cached", f"{engine_s:.2f} s per epoch "
                                                                 f"({engine_s / floor_s:.2f}x the floor)"),
    ]
    for stream in ("auto", "off"):
        r = big[stream]
        how = "streamed" if r["streamed"] else "in memory"
        rows.append((f"(3) {big['used']:,} of {BIG_IMAGES:,} {BIG_SIDE}px JPEGs used ({big['in_memory_mb']:.0f} MB as "
                     f"float32), stream {stream}, memory_limit_mb {BIG_LIMIT_MB}: {how}",
                     f"peak PSS {r['peak_mb']:.0f} MB over {r['processes']} processes = baseline "
                     f"{r['baseline_mb']:.0f} + {r['growth_mb']:.0f} MB; {r['seconds']:.0f} s"))
    rows.append(("(3) what holding the images costs: peak growth in memory minus streamed",
                 f"{big['off']['growth_mb'] - big['auto']['growth_mb']:.0f} MB"))
    print("| measurement | value |\n|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")
    summary = {"quick": QUICK, "rounds": ROUNDS, "timed_epochs": TIMED_EPOCHS, "warmup_epochs": WARMUP_EPOCHS,
               "first_step_cold_s": cold["seconds"], "first_step_warm_s": warm["seconds"],
               "cold_decode": cold["decode"], "cold_cache": cold["cache"],
               "floor_epoch_s": floor_s, "engine_epoch_s": engine_s, "engine_over_floor": engine_s / floor_s,
               "floor_epochs": floor, "engine_epochs": engine, "big": big, "load_average": os.getloadavg()[0]}
    print(json.dumps(summary, default=str))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child_run(sys.argv[2], sys.argv[3])
    else:
        main()
