"""Commands that train, queue and inspect single runs: run, submit, worker, resume, show, cancel, export,
check-teachers, validate."""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import threading
from typing import Any, Callable

from engine.cli.common import EXIT_INVALID, Command, get_run, load_valid_spec, run_job_here, spec_options
from engine.spec import printable, spec_from_yaml, spec_to_yaml
from engine.store import STALE_AFTER_SECONDS, Store, WorkspaceError, init_workspace, workspace_home


def register(command: Command) -> None:
    p = command("run", cmd_run, "train a spec in the foreground; the last line is the result as JSON")
    spec_options(p)
    p.add_argument("--nproc", type=int, metavar="N", help="train it as N DDP processes (one per GPU, or gloo "
                                                           "processes on the CPU): distributed.nproc=N")
    spec_options(command("submit", cmd_submit, "queue a spec for a worker; prints the run id"))
    p = command("worker", cmd_worker, "claim and train queued runs until stopped")
    p.add_argument("--once", action="store_true", help="exit when the queue is empty")
    p.add_argument("--gpu", type=int, help="use this CUDA device only (one worker per GPU)")
    p.add_argument("--stale-after", type=float, default=STALE_AFTER_SECONDS, metavar="SECONDS",
                   help="a running run whose heartbeat is older than this has lost its worker")
    p = command("resume", cmd_resume, "continue an interrupted or failed run from its last checkpoint, here in the "
                                      "foreground; the last line is the result as JSON")
    p.add_argument("run")
    p.add_argument("--queue", action="store_true", help="queue it for a worker instead; prints the run id")
    command("show", cmd_show, "status, result and events of a run").add_argument("run")
    command("cancel", cmd_cancel, "stop a queued or running run").add_argument("run")
    p = command("export", cmd_export, "write a run's metrics as CSV, or its distilled student as a file "
                                      "(pt with a model card, TorchScript or ONNX)")
    p.add_argument("run")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--csv", metavar="FILE", help="write the metrics (run_id, phase, step, epoch, key, value)")
    what.add_argument("--student", metavar="FILE", help="write the final student")
    p.add_argument("--format", default="pt", choices=("pt", "torchscript", "onnx"),
                   help="format of --student (default pt: state dict and model card, loads with plain PyTorch)")
    spec_options(command("check-teachers", cmd_check_teachers, "each teacher's test accuracy for a spec, "
                                                              "measured here and cached; the last line is JSON"))
    spec_options(command("validate", cmd_validate, "check a spec; exit 2 listing every problem"))


def cmd_run(args: argparse.Namespace) -> int:
    if args.nproc is not None:
        args.overrides.append(f"distributed.nproc={args.nproc}")
    spec = load_valid_spec(args)
    store = Store(init_workspace())
    return _train_here(store, store.create_run(spec_to_yaml(spec), spec.name), spec.device)


def cmd_resume(args: argparse.Namespace) -> int:
    store = Store(init_workspace())
    store.interrupt_orphaned_runs(STALE_AFTER_SECONDS)  # a run whose process died is resumable too
    run = get_run(store, args.run)
    if not store.resume_run(run.id):
        raise WorkspaceError(f"run {run.id} is {run.status}: only an interrupted or failed run can be resumed")
    if args.queue:
        print(run.id)
        return 0
    return _train_here(store, run.id, spec_from_yaml(run.spec_yaml).device)


def _train_here(store: Store, run_id: str, device: str) -> int:
    """Train a queued run in this process; the last line printed is the result as JSON.

    Ctrl-C or SIGTERM ends it `interrupted` with its last checkpoint at the next step (a second Ctrl-C stops at
    once); exit code 1 for a failed or cancelled run, 130 for an interrupted one.
    """
    from tqdm import tqdm

    from engine.worker import Heartbeat, execute_claimed

    worker_id = f"cli-{os.getpid()}"
    store.register_worker(worker_id, device)
    run = store.claim_run(worker_id, run_id)
    if run is None:
        raise WorkspaceError(f"run {run_id} was taken by a worker meanwhile (python -m engine show {run_id})")
    heartbeat = Heartbeat(store.home, worker_id)
    heartbeat.follow(run)
    heartbeat.start()
    bar = tqdm(total=100, desc=run_id, unit="%", file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}% {postfix}")

    def on_progress(fraction: float, phase: str) -> None:
        bar.n = round(100 * fraction, 1)
        bar.set_postfix_str(phase, refresh=True)

    stop_event = threading.Event()
    previous = {sig: signal.signal(sig, _stop_handler(stop_event)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = execute_claimed(store, run, stop_event, on_progress, stopped_status="interrupted")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        bar.close()
        heartbeat.stop()
        store.stop_worker(worker_id)
    final = store.get_run(run_id)
    if result is None:
        error = final.error or f"resume with python -m engine resume {run_id}"
        print(f"error: run {run_id} {final.status}: {error}", file=sys.stderr)
        print(json.dumps({"run_id": run_id, "status": final.status, "error": final.error}))
        return 130 if final.status == "interrupted" else 1
    print(json.dumps({**result, "status": "done"}))
    return 0


def _stop_handler(stop_event: threading.Event) -> Callable[[int, Any], None]:
    """The first signal asks the run to stop at its next step; a second one (Ctrl-C pressed again while the data
    loads, say) stops at once. Either way the run ends `interrupted`."""
    def handle(_signum: int, _frame: Any) -> None:
        if stop_event.is_set():
            raise KeyboardInterrupt
        stop_event.set()
    return handle


def cmd_submit(args: argparse.Namespace) -> int:
    spec = load_valid_spec(args)
    store = Store(init_workspace())
    print(store.create_run(spec_to_yaml(spec), spec.name))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    if args.gpu is not None:  # before torch touches CUDA: this worker sees only its GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    from engine.worker import serve

    serve(workspace_home(), once=args.once, stale_after=args.stale_after)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    store = Store(workspace_home(), readonly=True)
    run = get_run(store, args.run)
    print(f"run {run.id}: {printable(run.name)}\n"
          f"status: {run.status} ({100 * run.progress:.1f}%, phase {run.phase or '-'})")
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
    get_run(store, args.run)
    store.request_cancel(args.run)
    print(f"cancel requested for {args.run}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.student is not None:
        return _export_student(args)
    store = Store(workspace_home(), readonly=True)
    get_run(store, args.run)
    rows = store.metrics(args.run)
    with open(args.csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run_id", "phase", "step", "epoch", "key", "value"])
        writer.writerows([args.run, r["phase"], r["step"], r["epoch"], r["key"], r["value"]] for r in rows)
    print(f"wrote {len(rows)} rows to {args.csv}")
    return 0


def _export_student(args: argparse.Namespace) -> int:
    from engine.export import ExportError, export_student

    try:
        summary = export_student(workspace_home(), args.run, args.student, args.format)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    check = f", logits within {summary['max_abs_diff']:.1e} of PyTorch's" if "max_abs_diff" in summary else ""
    print(f"wrote the student of {args.run} as {args.format} to {args.student} ({summary['bytes']:,} bytes{check})")
    print(json.dumps(summary))
    return 0


def cmd_check_teachers(args: argparse.Namespace) -> int:
    """Create a teacher_check job and execute it in this process, as a worker would."""
    from engine.teacher_check import CHECK_RUN_ID, JOB_KIND

    spec = load_valid_spec(args)
    store = Store(init_workspace())
    job_id, result = run_job_here(store, CHECK_RUN_ID, JOB_KIND, {"spec_yaml": spec_to_yaml(spec)})
    if result is None:
        return 1
    print(f"{'teacher':<20} {'test acc':>9} {'samples':>8}  note")
    for tid, entry in result.items():
        acc = entry.get("test_acc")
        acc_text = f"{100 * acc:8.2f}%" if acc is not None else f"{'-':>9}"
        note = entry.get("error") or entry.get("note") or ("cached" if entry.get("cached") else "measured")
        print(f"{tid:<20} {acc_text} {entry.get('test_samples', 0):>8,}  {note}")
    print(json.dumps({"job_id": job_id, "status": "done", "teachers": result}))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    load_valid_spec(args)
    print(f"{args.spec}: ok")
    return 0
