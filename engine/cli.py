"""python -m engine ...: run, submit and inspect runs; list what the registries hold."""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import threading
from typing import Callable

from engine.registry import Registry
from engine.spec import RunSpec, SpecError, load_spec, spec_to_yaml
from engine.store import STALE_AFTER_SECONDS, Store, WorkspaceError, init_workspace, workspace_home

EXIT_INVALID = 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except (SpecError, WorkspaceError) as err:
        for line in str(err).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_INVALID


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description="PathScope engine")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    command("run", cmd_run, "train a spec in the foreground; the last line is the result as JSON").add_argument("spec")
    p = command("submit", cmd_submit, "queue a spec for a worker; prints the run id")
    p.add_argument("spec")
    p = command("worker", cmd_worker, "claim and train queued runs until stopped")
    p.add_argument("--once", action="store_true", help="exit when the queue is empty")
    p.add_argument("--gpu", type=int, help="use this CUDA device only (one worker per GPU)")
    p.add_argument("--stale-after", type=float, default=STALE_AFTER_SECONDS, metavar="SECONDS",
                   help="a running run whose heartbeat is older than this has lost its worker")
    command("ls", cmd_ls, "list the runs of the workspace")
    command("show", cmd_show, "status, result and events of a run").add_argument("run")
    command("cancel", cmd_cancel, "stop a queued or running run").add_argument("run")
    p = command("export", cmd_export, "write a run's metrics as CSV")
    p.add_argument("run")
    p.add_argument("--csv", required=True, help="output file")
    command("validate", cmd_validate, "check a spec; exit 2 listing every problem").add_argument("spec")
    for name, help_text in (("datasets", "datasets"), ("models", "architectures"),
                            ("distillers", "distillers"), ("aggregators", "aggregators")):
        command(name, _lister(name), f"list the registered {help_text}")
    p = command("spots", cmd_spots, "the tappable spots of an architecture with kinds and shapes")
    p.add_argument("model")
    _shape_options(p)
    p = command("candidates", cmd_candidates, "natural paths from a teacher to a student, with fitting distillers")
    p.add_argument("teacher")
    p.add_argument("student")
    _shape_options(p)
    return parser


def _shape_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", default="3x32x32", help="input shape CxHxW (default 3x32x32)")
    p.add_argument("--classes", type=int, default=10)


def _load_valid_spec(path: str) -> RunSpec:
    from engine.validate import check_spec

    return check_spec(load_spec(path), workspace_home())


def cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from engine.worker import Heartbeat, execute_claimed

    spec = _load_valid_spec(args.spec)
    store = Store(init_workspace())
    run_id = store.create_run(spec_to_yaml(spec), spec.name)
    worker_id = f"cli-{os.getpid()}"
    store.register_worker(worker_id, spec.device)
    run = store.claim_run(worker_id, run_id)
    heartbeat = Heartbeat(store.home, worker_id)
    heartbeat.current_run = run_id
    heartbeat.start()
    bar = tqdm(total=100, desc=run_id, unit="%", file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")

    def on_progress(fraction: float, phase: str) -> None:
        bar.n = round(100 * fraction, 1)
        bar.set_postfix_str(phase, refresh=True)

    try:
        result = execute_claimed(store, run, threading.Event(), on_progress)
    finally:
        bar.close()
        heartbeat.stop()
        store.stop_worker(worker_id)
    final = store.get_run(run_id)
    if result is None:
        print(f"error: run {run_id} {final.status}: {final.error}", file=sys.stderr)
        print(json.dumps({"run_id": run_id, "status": final.status, "error": final.error}))
        return 1
    print(json.dumps({**result, "status": "done"}))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    spec = _load_valid_spec(args.spec)
    store = Store(init_workspace())
    print(store.create_run(spec_to_yaml(spec), spec.name))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    if args.gpu is not None:  # before torch touches CUDA: this worker sees only its GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    from engine.worker import serve

    serve(workspace_home(), once=args.once, stale_after=args.stale_after)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    store = Store(workspace_home(), readonly=True)
    print(f"{'run':<22} {'status':<10} {'progress':>8} {'test acc':>8}  name")
    for run in store.list_runs():
        acc = run.result.get("test_acc")
        acc_text = f"{100 * acc:7.2f}%" if acc is not None else f"{'':>8}"
        print(f"{run.id:<22} {run.status:<10} {100 * run.progress:7.1f}% {acc_text}  {run.name}")
    return 0


def _get_run(store: Store, run_id: str):
    run = store.get_run(run_id)
    if run is None:
        raise WorkspaceError(f"no run {run_id!r} in {store.home} (see python -m engine ls)")
    return run


def cmd_show(args: argparse.Namespace) -> int:
    store = Store(workspace_home(), readonly=True)
    run = _get_run(store, args.run)
    print(f"run {run.id}: {run.name}\nstatus: {run.status} ({100 * run.progress:.1f}%, phase {run.phase or '-'})")
    if run.error:
        print(f"error: {run.error}")
    if run.result:
        print("result: " + json.dumps(run.result))
    for event in store.events(run.id):
        print(f"  [{event['level']}] {event['message']}")
    print("spec:\n" + run.spec_yaml)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    store = Store(workspace_home())
    _get_run(store, args.run)
    store.request_cancel(args.run)
    print(f"cancel requested for {args.run}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    store = Store(workspace_home(), readonly=True)
    _get_run(store, args.run)
    rows = store.metrics(args.run)
    with open(args.csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run_id", "phase", "step", "epoch", "key", "value"])
        writer.writerows([args.run, r["phase"], r["step"], r["epoch"], r["key"], r["value"]] for r in rows)
    print(f"wrote {len(rows)} rows to {args.csv}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    _load_valid_spec(args.spec)
    print(f"{args.spec}: ok")
    return 0


def _registry(name: str) -> Registry:
    if name == "datasets":
        from engine.data import DATASETS as registry
    elif name == "models":
        from engine.models import MODELS as registry
    elif name == "distillers":
        from engine.paths import DISTILLERS as registry
    else:
        from engine.aggregators import AGGREGATORS as registry
    return registry


def _lister(name: str) -> Callable[[argparse.Namespace], int]:
    def list_entries(_args: argparse.Namespace) -> int:
        for entry in _registry(name):
            print(f"{entry.name:<20} {entry.description}")
        return 0

    return list_entries


def _spots_for(model: str, args: argparse.Namespace):
    from engine.models import MODELS
    from engine.models.spots import list_spots

    try:
        shape = tuple(int(v) for v in args.input.lower().split("x"))
        assert len(shape) == 3
    except (ValueError, AssertionError):
        raise SpecError([f"--input: expected CxHxW such as 3x32x32, got {args.input!r}"]) from None
    if model not in MODELS:
        raise SpecError([f"model: unknown architecture {model!r} (known: {', '.join(MODELS.names())})"])
    return list_spots(model, shape, args.classes, {})


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def cmd_spots(args: argparse.Namespace) -> int:
    for spot in _spots_for(args.model, args):
        print(f"{spot.name:<12} {spot.kind:<12} {_shape_text(spot.shape)}")
    return 0


def cmd_candidates(args: argparse.Namespace) -> int:
    from engine.paths.candidates import propose_candidates

    for c in propose_candidates(_spots_for(args.teacher, args), _spots_for(args.student, args)):
        t, s = c.teacher_spot, c.student_spot
        print(f"{t.name} {_shape_text(t.shape)} -> {s.name} {_shape_text(s.shape)}: {', '.join(c.distillers)}")
    return 0
