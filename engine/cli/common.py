"""What the command families share: the spec options and loading, a run looked up by id, jobs executed here."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

from engine.spec import RunSpec, SpecError, apply_overrides, parse_spec
from engine.spec_yaml import load_spec_data
from engine.store import RunRow, Store, WorkspaceError, workspace_home

EXIT_INVALID = 2
#: adds a subcommand: (name, handler, help text) -> its parser
Command = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a field of the spec, such as epochs=2 or dataset.batch_size=128 (repeatable); "
                        "validated like the spec and stored with the run")


def load_valid_spec(args: argparse.Namespace) -> RunSpec:
    from engine.validate import check_spec, spec_warnings

    spec = check_spec(parse_spec(spec_data(args)), workspace_home())
    for line in spec_warnings(spec):
        print(f"warning: {line}", file=sys.stderr)
    return spec


def spec_data(args: argparse.Namespace) -> Any:
    """The spec file's data with the --set overrides applied (after a version-1 file is migrated)."""
    data = load_spec_data(args.spec)
    if not args.overrides:
        return data
    old = [o for o in args.overrides if o.partition("=")[0].strip().split(".")[0] == "aggregator"]
    if old:  # the field is gone; say where its two roles went rather than "unknown key"
        raise SpecError([f"--set {o}: specs have no aggregator since version 2: set weighting.name / "
                         f"weighting.params.* or method.name / method.params.* instead" for o in old])
    return apply_overrides(data, args.overrides)


def get_run(store: Store, run_id: str) -> RunRow:
    run = store.get_run(run_id)
    if run is None:
        raise WorkspaceError(f"no run {run_id!r} in {store.home} (see python -m engine ls)")
    return run


def run_job_here(store: Store, run_id: str, kind: str, params: dict) -> tuple[str, dict | None]:
    """Create a job and execute it in this process, as a worker would; on failure print why (result None)."""
    from engine.jobs import execute_job
    from engine.runtime import resolve_device
    from engine.worker import Heartbeat

    worker_id = f"cli-{os.getpid()}"
    store.register_worker(worker_id, str(resolve_device("auto")))
    job_id = store.create_job(run_id, kind, params)
    heartbeat = Heartbeat(store.home, worker_id)  # a live heartbeat keeps workers from requeueing the job
    heartbeat.start()
    try:
        result = execute_job(store, store.claim_job(worker_id, job_id))
    finally:
        heartbeat.stop()
        store.stop_worker(worker_id)
    if result is None:
        error = store.get_job(job_id).error
        print(f"error: {error}", file=sys.stderr)
        print(json.dumps({"job_id": job_id, "status": "failed", "error": error}))
    return job_id, result
