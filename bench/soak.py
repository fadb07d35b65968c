"""Soak: 4 digits runs kept in flight, 2 workers, a reader at the Live page's cadence, and random faults.

For SOAK_SECONDS (default 600) two workers train small digits runs while, at seeded random moments, one of them
is killed (SIGKILL) or paused past the reclaim grace (SIGSTOP, then SIGCONT), and a dead worker is replaced. A
reader polls as pages/live.py does (the run list, the run, its metrics and events every 2 s). Finished runs are
replaced so four are always queued or running; afterwards no more faults are injected and the runs in flight are
finished. Reported: runs done and failed (a run killed MAX_ATTEMPTS times is failed by design), runs finished more
than once, duplicated metric rows, "database is locked" errors (reader and worker logs), reader latency.

    make soak                      # 10 minutes
    SOAK_SECONDS=120 make soak     # a shorter look
"""
from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.spec import parse_spec, spec_to_yaml  # noqa: E402
from engine.store import Store  # noqa: E402

RUNS_IN_FLIGHT = 4
WORKERS = 2
LIVE_POLL_S = 2.0  # pages/live.py POLL_S
GRACE_S = 3  # the workers' --stale-after: a paused or killed worker's run is reclaimed after this
FAULT_EVERY_S = (15.0, 40.0)  # seeded uniform gap between two faults
PAUSE_S = 2 * GRACE_S  # a pause long enough for the run to be reclaimed while its worker is alive
DRAIN_S = 300.0  # after the soak, how long the runs in flight may take to finish


def _spec(seed: int) -> str:
    spec = parse_spec({
        "name": f"soak-{seed}", "dataset": {"name": "digits", "batch_size": 64},
        "teachers": [{"id": "t", "arch": "mlp", "arch_params": {"hidden": [32]},
                      "source": {"kind": "train", "epochs": 2}}],
        "student": {"arch": "mlp", "arch_params": {"hidden": [16]}},
        "paths": [{"id": "t-kd", "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}],
        "epochs": 20, "seed": seed, "log_every": 5,
    })
    return spec_to_yaml(spec)


@dataclass
class ReaderStats:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _read_as_live_does(home: Path, stop: threading.Event, stats: ReaderStats) -> None:
    reader = Store(home, readonly=True)
    while not stop.is_set():
        started = time.perf_counter()
        try:
            runs = reader.list_runs()
            running = [r for r in runs if r.status == "running"] or runs[:1]
            for run in running[:1]:
                reader.get_run(run.id)
                reader.metrics(run.id)
                reader.events(run.id)
            stats.latencies_ms.append(1000 * (time.perf_counter() - started))
        except Exception as err:  # noqa: BLE001 - every error is what the soak counts
            stats.errors.append(f"{type(err).__name__}: {err}")
        stop.wait(LIVE_POLL_S)
    reader.close()


class Workers:
    """The worker processes, each logging to its own file; faults replace or pause them."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.faults = {"killed": 0, "paused": 0}

    def start(self) -> subprocess.Popen:
        log = self.home / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "engine", "worker", "--stale-after", str(GRACE_S)],
                                    cwd=ROOT, env={**os.environ, "PATHSCOPE_HOME": str(self.home)},
                                    stdout=out, stderr=out, start_new_session=True)
        self.procs.append(proc)
        return proc

    def live(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def fault(self, rng: random.Random) -> None:
        victim = rng.choice(self.live())
        if rng.random() < 0.5:
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            self.faults["killed"] += 1
            self.start()
        else:
            os.killpg(victim.pid, signal.SIGSTOP)
            time.sleep(PAUSE_S)
            os.killpg(victim.pid, signal.SIGCONT)
            self.faults["paused"] += 1

    def stop(self) -> None:
        for proc in self.live():
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=60)

    def lock_errors(self) -> int:
        return sum(log.read_text(errors="replace").count("database is locked") for log in self.logs)


def _keep_in_flight(store: Store, submitted: list[str], seed: int) -> int:
    active = [r for r in submitted if store.get_run(r).status in ("queued", "running")]
    for _ in range(RUNS_IN_FLIGHT - len(active)):
        submitted.append(store.create_run(_spec(seed), f"soak-{seed}"))
        seed += 1
    return seed


def _report(store: Store, submitted: list[str], workers: Workers, stats: ReaderStats, seconds: float) -> dict:
    statuses = [store.get_run(r).status for r in submitted]
    done_twice = sum(1 for r in submitted
                     if sum(e["message"].startswith("done:") for e in store.events(r)) > 1)
    duplicates = store.con.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM metrics GROUP BY run_id, phase, step, key HAVING COUNT(*) > 1)"
    ).fetchone()[0]
    reader_locks = sum("locked" in e for e in stats.errors)
    latencies = stats.latencies_ms or [float("nan")]
    return {"seconds": round(seconds), "runs_submitted": len(submitted), "runs_done": statuses.count("done"),
            "runs_failed": statuses.count("failed"), "runs_unfinished": len(submitted) - statuses.count("done")
            - statuses.count("failed"), "runs_done_twice": done_twice, "duplicated_metric_rows": duplicates,
            "lock_errors": reader_locks + workers.lock_errors(), "reader_errors": len(stats.errors),
            "reader_reads": len(stats.latencies_ms), "reader_median_ms": round(statistics.median(latencies), 1),
            "reader_max_ms": round(max(latencies), 1), **workers.faults}


def main() -> None:
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    home = Path(tempfile.mkdtemp(prefix="pathscope-soak-")) / "workspace"
    store = Store(home)
    rng = random.Random(12)
    submitted: list[str] = []
    seed = _keep_in_flight(store, submitted, 0)
    workers = Workers(home)
    for _ in range(WORKERS):
        workers.start()
    stats, stop = ReaderStats(), threading.Event()
    reader = threading.Thread(target=_read_as_live_does, args=(home, stop, stats))
    reader.start()
    started = time.monotonic()
    next_fault = started + rng.uniform(*FAULT_EVERY_S)
    try:
        while time.monotonic() - started < seconds:
            seed = _keep_in_flight(store, submitted, seed)
            if time.monotonic() >= next_fault:
                workers.fault(rng)
                next_fault = time.monotonic() + rng.uniform(*FAULT_EVERY_S)
            time.sleep(1.0)
        drain_until = time.monotonic() + DRAIN_S
        while time.monotonic() < drain_until and any(
                store.get_run(r).status in ("queued", "running") for r in submitted):
            time.sleep(1.0)
    finally:
        stop.set()
        reader.join()
        workers.stop()
    report = _report(store, submitted, workers, stats, time.monotonic() - started)
    for key, value in report.items():
        print(f"{key:>24}: {value}")
    print(f"workspace: {home}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
