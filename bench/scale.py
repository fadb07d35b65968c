"""Scale: what Ray and DDP cost and give on one machine (issue #15's bench).

Three measurements, each in this one process run, reported as medians and ratios (timings here are noisy):

1. An 8-run digits sweep (aggregators x seeds) with the local executor (2 workers, one per core) against the Ray
   executor on a local 2-CPU cluster (2 trials at a time): wall time of each and their ratio (Ray's overhead).
2. One Fashion-MNIST run (or digits where Fashion-MNIST is not installed) trained by 1 and by 2 gloo processes:
   training samples/s of each (one BLAS thread per process, so the two launches use the same cores).
3. The one writer: the same 8 runs on Ray logging every step (log_every 1); rows the driver wrote, the share of the
   driver's time spent writing them, and whether every logged row arrived.

    make scale                 # about 10 minutes on this 2-core machine
    QUICK=1 make scale         # 1 epoch per run, digits only, about 4 minutes
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # each process one BLAS thread: launches compare on equal cores

from engine.executors import launch  # noqa: E402
from engine.spec import parse_spec  # noqa: E402
from engine.store import Store, init_workspace  # noqa: E402

QUICK = os.environ.get("QUICK") == "1"
EPOCHS = 1 if QUICK else 3
AGGREGATORS = ("equal", "uncertainty", "dwa", "pcgrad")
SEEDS = (0, 1)
WORKERS = 2
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


def sweep_specs(log_every: int) -> list:
    """8 digits runs: an MLP teacher trained inline (once, cached), an MLP student, KD and a second KD path."""
    specs = []
    for aggregator in AGGREGATORS:
        for seed in SEEDS:
            specs.append(parse_spec({
                "name": f"scale · {aggregator} · seed {seed}", "dataset": {"name": "digits", "batch_size": 64},
                "teachers": [{"id": "t", "arch": "mlp", "arch_params": {"hidden": [64]},
                              "source": {"kind": "train", "epochs": 3}}],
                "student": {"arch": "mlp", "arch_params": {"hidden": [32]}},
                "paths": [{"id": "kd", "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
                          {"id": "dkd", "teacher": "t", "distiller": "dkd", "teacher_spot": "fc",
                           "student_spot": "fc"}],
                "weighting": {"name": aggregator}, "epochs": EPOCHS, "seed": seed, "log_every": log_every,
            }))
    return specs


def warm_teacher(home: Path) -> None:
    """Train the shared inline teacher once, so neither executor's wall time includes it."""
    spec = sweep_specs(10)[0]
    with closing(Store(home)) as store:
        launched = launch(store, [spec], executor="local")
    _serve(home, 1)
    assert _statuses(home, launched.run_ids) == {"done"}


def _serve(home: Path, workers: int) -> None:
    env = {**os.environ, "PATHSCOPE_HOME": str(home)}
    procs = [subprocess.Popen([sys.executable, "-m", "engine", "worker", "--once"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]
    for proc in procs:
        proc.wait()


def _statuses(home: Path, run_ids: list[str]) -> set[str]:
    with closing(Store(home, readonly=True)) as store:
        return {store.get_run(run_id).status for run_id in run_ids}


def local_sweep(home: Path) -> float:
    started = time.perf_counter()
    with closing(Store(home)) as store:
        launched = launch(store, sweep_specs(10), executor="local")
    _serve(home, WORKERS)
    seconds = time.perf_counter() - started
    assert _statuses(home, launched.run_ids) == {"done"}, _statuses(home, launched.run_ids)
    return seconds


class WriteClock:
    """Time the Ray driver spends applying trials' reports to the store (the one writer's load)."""

    def __init__(self) -> None:
        from engine.executors import ray_tune

        self.seconds, self.reports = 0.0, 0
        original = ray_tune.SweepLedger.report

        def timed(ledger, run_id, payload):
            started = time.perf_counter()
            original(ledger, run_id, payload)
            self.seconds += time.perf_counter() - started
            self.reports += 1

        ray_tune.SweepLedger.report = timed


def ray_sweep(home: Path, log_every: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    with closing(Store(home)) as store:
        launched = launch(store, sweep_specs(log_every), executor="ray", wait=True)
    seconds = time.perf_counter() - started
    assert set(launched.statuses.values()) == {"done"}, launched.statuses
    return seconds, launched.run_ids


def rows_written(home: Path, run_ids: list[str]) -> tuple[int, int]:
    """(metric rows stored, steps between the first and the last logged whose loss/total is missing)."""
    with closing(Store(home, readonly=True)) as store:
        placeholders = ",".join("?" * len(run_ids))
        rows = store.con.execute(f"SELECT COUNT(*) FROM metrics WHERE run_id IN ({placeholders})", run_ids).fetchone()[0]
        missing = 0
        for run_id in run_ids:
            steps = store.con.execute("SELECT COUNT(DISTINCT step) FROM metrics WHERE run_id=? AND phase='main' AND "
                                      "key='loss/total'", (run_id,)).fetchone()[0]
            # steps 0..last were each logged (log_every 1); the end-of-epoch rows sit one step past the last
            expected = store.con.execute("SELECT MAX(step) + 1 FROM metrics WHERE run_id=? AND phase='main' AND "
                                         "key='loss/total'", (run_id,)).fetchone()[0]
            missing += (expected or 0) - steps
        return rows, missing


def ddp_samples_per_s(home: Path) -> dict[str, float]:
    from engine.distributed.launch import samples_per_second

    fashion = FASHION_ROOT.exists() and not QUICK
    spec = parse_spec({
        "name": "scale ddp", "dataset": {"name": "fashion_mnist" if fashion else "digits", "batch_size": 256},
        "student": {"arch": "mlp", "arch_params": {"hidden": [512, 256]}},
        "epochs": 1 if fashion else 3, "log_every": 50,
    })
    measured = samples_per_second(spec, home, (1, 2))
    return {"dataset": spec.dataset.name, **{f"nproc_{n}": round(v, 1) for n, v in measured.items()}}


def main() -> None:
    import ray

    out: dict[str, object] = {"epochs": EPOCHS, "runs": len(AGGREGATORS) * len(SEEDS)}
    with tempfile.TemporaryDirectory(prefix="pathscope-scale-") as tmp:
        home = init_workspace(Path(tmp) / "workspace")
        os.environ["PATHSCOPE_HOME"] = str(home)
        warm_teacher(home)
        ray.init(num_cpus=WORKERS, include_dashboard=False, address="local")
        clock = WriteClock()
        local_s, ray_s = [], []
        for _ in range(1 if QUICK else 2):  # alternate, so drift in the machine's load hits both
            local_s.append(local_sweep(home))
            ray_s.append(ray_sweep(home, 10)[0])
        out["local_sweep_s"], out["ray_sweep_s"] = statistics.median(local_s), statistics.median(ray_s)
        out["ray_over_local"] = round(out["ray_sweep_s"] / out["local_sweep_s"], 2)
        clock.seconds, clock.reports = 0.0, 0
        every_step_s, run_ids = ray_sweep(home, 1)
        rows, missing = rows_written(home, run_ids)
        out["writer"] = {"sweep_s": round(every_step_s, 1), "rows": rows, "reports": clock.reports,
                         "write_s": round(clock.seconds, 2), "rows_per_write_s": round(rows / max(clock.seconds, 1e-9)),
                         "share_of_wall": round(clock.seconds / every_step_s, 3), "missing_steps": missing}
        ray.shutdown()
        out["ddp"] = ddp_samples_per_s(home)
    print(f"8-run digits sweep: local {out['local_sweep_s']:.1f} s, Ray {out['ray_sweep_s']:.1f} s "
          f"(x{out['ray_over_local']})")
    writer = out["writer"]
    print(f"one writer, 8 trials logging every step: {writer['rows']} rows in {writer['reports']} reports, "
          f"{writer['write_s']} s of writes ({100 * writer['share_of_wall']:.1f}% of the sweep), "
          f"{writer['missing_steps']} steps missing")
    ddp = out["ddp"]
    print(f"DDP on {ddp['dataset']}: {ddp['nproc_1']} samples/s with 1 process, {ddp['nproc_2']} with 2")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
