"""Start one run as N DDP processes with torchrun, and torchrun's per-rank entry.

``run_distributed`` is called by the process that claimed the run (a worker, ``engine run``): it checks the spec,
starts ``python -m torch.distributed.run --standalone --nproc-per-node N -m engine.distributed.launch`` and waits.
The ranks get the run id and workspace on the command line and the claim's attempt token in the environment (not
on a command line other users can list); rank 0 writes the store rows under that token and leaves its result in
the run's folder. A failed rank's exception is written beside it, so the caller re-raises what ended the run
(RunCancelled, RunInterrupted, LostClaim, a SpecError) or a DistributedRunError naming the rank and the cause.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from engine.distributed.checks import check_distributed, cpu_cores
from engine.runtime import LostClaim, RunCancelled, RunInterrupted
from engine.spec import RunSpec, SpecError, spec_from_yaml, spec_to_yaml
from engine.workspace import run_dir

ROOT = Path(__file__).resolve().parents[2]
TOKEN_ENV = "PATHSCOPE_RUN_TOKEN"
POLL_SECONDS = 0.5
LOG_TAIL_LINES = 20
#: exceptions a rank may end with that the caller handles by their type (the worker: cancelled, requeued, ...)
KNOWN_ENDINGS = {cls.__name__: cls for cls in (RunCancelled, RunInterrupted, LostClaim)}


class DistributedRunError(RuntimeError):
    """A rank (or torchrun) failed; the message names the rank and its exception, or torchrun's last output."""


def run_distributed(spec: RunSpec, run_id: str, home: Path, token: str | None, nproc: int | None = None,
                    stop: threading.Event | None = None) -> dict[str, Any]:
    """Run ``spec`` as ``nproc`` (default: spec.distributed.nproc) DDP processes; return rank 0's result.

    ``stop``, when set, ends the ranks (SIGTERM) and raises RunInterrupted: the run resumes from its checkpoint."""
    nproc = nproc or spec.distributed.nproc
    check_distributed(spec, nproc)
    folder = run_dir(home, run_id) / "distributed"
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("rank*.error.json"), folder / "result.json"]:
        old.unlink(missing_ok=True)  # a resumed attempt must not read what the one before left
    (folder / "spec.yaml").write_text(spec_to_yaml(spec))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "engine.distributed.launch", "--run-id", run_id, "--home", str(home), "--folder", str(folder)]
    env = {**os.environ, TOKEN_ENV: token or "", "PYTHONPATH": _with_root(os.environ.get("PYTHONPATH"))}
    # N processes share the cores (torchrun's own default would be 1 thread each)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpu_cores() // nproc)))
    log = folder / "torchrun.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        _wait(process, stop)
    if process.returncode != 0:
        _raise_failure(folder, log, process.returncode)
    return json.loads((folder / "result.json").read_text())


def _with_root(path: str | None) -> str:
    return str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}"


def _wait(process: subprocess.Popen, stop: threading.Event | None) -> None:
    while process.poll() is None:
        if stop is not None and stop.is_set():
            os.killpg(process.pid, signal.SIGTERM)  # torchrun and its ranks: a session of their own
            process.wait()
            raise RunInterrupted("the process is stopping")
        time.sleep(POLL_SECONDS)


def _raise_failure(folder: Path, log: Path, returncode: int) -> None:
    # the first rank to fail is the cause: the others then fail in a collective, or torchrun ends them
    reports = sorted((json.loads(p.read_text()) for p in folder.glob("rank*.error.json")), key=lambda r: r["time"])
    if reports:
        report = reports[0]
        kind, message = report["type"], report["message"]
        if kind in KNOWN_ENDINGS:
            raise KNOWN_ENDINGS[kind](message)
        if kind == "SpecError":
            raise SpecError(message.splitlines())
        raise DistributedRunError(f"rank {report['rank']} failed: {kind}: {message}")
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-LOG_TAIL_LINES:]
    tail = lines[-1] if lines else "no output"
    raise DistributedRunError(f"torchrun exited with status {returncode} before any rank reported an error: {tail} "
                              f"(full log: {log})")


# ------------------------------------------------------------------ torchrun's per-rank entry
def main(argv: list[str] | None = None) -> None:
    """One rank: read the spec the launcher wrote, train, leave the result (rank 0) or the exception behind."""
    from engine.distributed.rank import train_rank  # loads the whole engine: only in the rank processes

    parser = argparse.ArgumentParser(description="one rank of a PathScope DDP run (started by run_distributed)")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--home", required=True, type=Path)
    parser.add_argument("--folder", required=True, type=Path)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    spec = spec_from_yaml((args.folder / "spec.yaml").read_text())
    try:
        result = train_rank(spec, args.run_id, args.home, os.environ.get(TOKEN_ENV) or None)
    except BaseException as error:
        report = {"rank": rank, "type": type(error).__name__, "message": str(error), "time": time.time()}
        (args.folder / f"rank{rank}.error.json").write_text(json.dumps(report))
        raise
    finally:
        _leave_group()
    if result is not None:
        (args.folder / "result.json").write_text(json.dumps(result))


def _leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------ bench
def samples_per_second(spec: RunSpec, home: Path, counts: tuple[int, ...] = (1, 2)) -> dict[int, float]:
    """Training samples/s of ``spec`` run from scratch as each count of DDP processes (gloo on CPU): one fresh run in
    the workspace's store per count. For bench/scale.py."""
    from engine.store import Store

    store = Store(home)
    measured = {}
    for nproc in counts:
        run_id = store.create_run(spec_to_yaml(spec), f"{spec.name} x{nproc} processes")
        measured[nproc] = run_distributed(spec, run_id, home, None, nproc)["samples_per_s"]
    return measured


if __name__ == "__main__":
    main()
