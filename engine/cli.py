"""python -m engine ...: run, submit and inspect runs; list what the registries hold."""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable

from engine.ablation import DEFAULT_TOLERANCE, AblationError, AblationRow
from engine.registry import Registry
from engine.spec import (
    RunSpec, SpecError, apply_overrides, load_spec_data, parse_spec, printable, spec_from_yaml, spec_to_yaml,
)
from engine.store import (
    STALE_AFTER_SECONDS, Store, WorkspaceError, db_path, init_workspace, mark_orphaned_runs, workspace_home,
)

EXIT_INVALID = 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except (SpecError, WorkspaceError, AblationError) as err:
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

    p = command("run", cmd_run, "train a spec in the foreground; the last line is the result as JSON")
    _spec_options(p)
    p.add_argument("--nproc", type=int, metavar="N", help="train it as N DDP processes (one per GPU, or gloo "
                                                           "processes on the CPU): distributed.nproc=N")
    _spec_options(command("submit", cmd_submit, "queue a spec for a worker; prints the run id"))
    p = command("worker", cmd_worker, "claim and train queued runs until stopped")
    p.add_argument("--once", action="store_true", help="exit when the queue is empty")
    p.add_argument("--gpu", type=int, help="use this CUDA device only (one worker per GPU)")
    p.add_argument("--stale-after", type=float, default=STALE_AFTER_SECONDS, metavar="SECONDS",
                   help="a running run whose heartbeat is older than this has lost its worker")
    command("ls", cmd_ls, "list the runs of the workspace (runs whose process died are marked interrupted)")
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
    _spec_options(command("check-teachers", cmd_check_teachers, "each teacher's test accuracy for a spec, "
                                                               "measured here and cached; the last line is JSON"))
    p = command("ablate", cmd_ablate, "queue the runs that measure each path's effect on accuracy "
                                      "(without it, it alone, no paths); prints the group id")
    p.add_argument("run")
    p.add_argument("--wait", action="store_true", help="train them here, then print the table")
    p = command("compare", cmd_compare, "queue a spec under several weightings x seeds in one comparison group "
                                        "(each keeps the spec's path method); prints the group id and the runs")
    _spec_options(p)
    p.add_argument("--weightings", required=True, metavar="A,B",
                   help="comma-separated weighting names (python -m engine weightings lists them)")
    p.add_argument("--seeds", default="1", metavar="N|S,S",
                   help="a count N (the spec's seed and the N-1 after it) or a comma-separated list of seeds "
                        "such as 0,1,2 (default 1: the spec's own seed)")
    _sweep_options(command("sweep", cmd_sweep, "run a spec over a grid of field values x seeds as one comparison "
                                               "group: queued for local workers, or driven here on a Ray cluster "
                                               "until every trial ends; prints the group id and the runs"))
    p = command("drive", cmd_drive, "drive the queued Ray runs of a group until every trial ends (the dashboard "
                                    "starts it for a comparison launched on Ray)")
    p.add_argument("group")
    _ray_options(p)
    p = command("cluster", cmd_cluster, "a Ray cluster's nodes (CPUs, GPUs, alive) and this workspace's Ray trials "
                                        "running and waiting; the last line is JSON")
    p.add_argument("--address", default="auto", help="auto (the cluster `ray start` started here) or host:port")
    p = command("ablation", cmd_ablation, "each path's verdict next to its measured effect on test accuracy")
    p.add_argument("run")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="POINTS",
                   help="an effect within ±POINTS of zero counts as neutral (default %(default)s)")
    _spec_options(command("validate", cmd_validate, "check a spec; exit 2 listing every problem"))
    _explain_options(command("explain", cmd_explain, "attribution maps of a run's student and teachers (or, with "
                                                     "--agreement, their agreement per epoch); the last line is JSON"))
    for name, help_text in (("datasets", "datasets"), ("models", "architectures"), ("distillers", "distillers"),
                            ("weightings", "weightings"), ("methods", "path methods")):
        command(name, _lister(name), f"list the registered {help_text}")
    command("aggregators", cmd_aggregators, "replaced by the weightings and methods listings")
    p = command("spots", cmd_spots, "the tappable spots of an architecture with kinds and shapes")
    p.add_argument("model")
    _shape_options(p)
    p = command("candidates", cmd_candidates, "natural paths from a teacher to a student, with fitting distillers")
    p.add_argument("teacher")
    p.add_argument("student")
    _shape_options(p)
    return parser


def _spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a field of the spec, such as epochs=2 or dataset.batch_size=128 (repeatable); "
                        "validated like the spec and stored with the run")


def _sweep_options(p: argparse.ArgumentParser) -> None:
    from engine.executors import EXECUTORS

    _spec_options(p)
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                   help="a dotted spec field and its values, such as weighting.name=equal,uncertainty or "
                        "optimizer.lr=0.1,0.01 (repeatable: the runs are every combination); aggregator is "
                        "short for weighting.name")
    p.add_argument("--seeds", default="1", metavar="N|S,S",
                   help="a count N (the spec's seed and the N-1 after it) or a comma-separated list of seeds")
    p.add_argument("--executor", default="local", choices=list(EXECUTORS),
                   help="; ".join(f"{name}: {text}" for name, text in EXECUTORS.items()))
    _ray_options(p)


def _ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="the Ray cluster: auto (the one ray start started on this machine, or "
                                     "RAY_ADDRESS) or the head's host:port (default: start one on this machine "
                                     "for the sweep); ray:// (Ray Client) cannot drive a sweep")
    p.add_argument("--storage", metavar="PATH", help="the folder for the runs' files, writable from every node "
                                                     "(default: the workspace, right for one machine)")


def _shape_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", default="3x32x32", help="input shape CxHxW (default 3x32x32)")
    p.add_argument("--classes", type=int, default=10)


def _load_valid_spec(args: argparse.Namespace) -> RunSpec:
    from engine.validate import check_spec, spec_warnings

    spec = check_spec(parse_spec(_spec_data(args)), workspace_home())
    for line in spec_warnings(spec):
        print(f"warning: {line}", file=sys.stderr)
    return spec


def _spec_data(args: argparse.Namespace) -> Any:
    """The spec file's data with the --set overrides applied (after a version-1 file is migrated)."""
    data = load_spec_data(args.spec)
    if not args.overrides:
        return data
    old = [o for o in args.overrides if o.partition("=")[0].strip().split(".")[0] == "aggregator"]
    if old:  # the field is gone; say where its two roles went rather than "unknown key"
        raise SpecError([f"--set {o}: specs have no aggregator since version 2: set weighting.name / "
                         f"weighting.params.* or method.name / method.params.* instead" for o in old])
    return apply_overrides(data, args.overrides)


def cmd_run(args: argparse.Namespace) -> int:
    if args.nproc is not None:
        args.overrides.append(f"distributed.nproc={args.nproc}")
    spec = _load_valid_spec(args)
    store = Store(init_workspace())
    return _train_here(store, store.create_run(spec_to_yaml(spec), spec.name), spec.device)


def cmd_resume(args: argparse.Namespace) -> int:
    store = Store(init_workspace())
    store.interrupt_orphaned_runs(STALE_AFTER_SECONDS)  # a run whose process died is resumable too
    run = _get_run(store, args.run)
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
    spec = _load_valid_spec(args)
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
    mark_orphaned_runs(workspace_home())
    store = Store(workspace_home(), readonly=True)
    print(f"{'run':<22} {'status':<11} {'progress':>8} {'test acc':>8}  name")
    for run in store.list_runs():
        acc = run.result.get("test_acc")
        acc_text = f"{100 * acc:7.2f}%" if acc is not None else f"{'':>8}"
        print(f"{run.id:<22} {run.status:<11} {100 * run.progress:7.1f}% {acc_text}  {printable(run.name)}")
    return 0


def _get_run(store: Store, run_id: str):
    run = store.get_run(run_id)
    if run is None:
        raise WorkspaceError(f"no run {run_id!r} in {store.home} (see python -m engine ls)")
    return run


def cmd_show(args: argparse.Namespace) -> int:
    store = Store(workspace_home(), readonly=True)
    run = _get_run(store, args.run)
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
    _get_run(store, args.run)
    store.request_cancel(args.run)
    print(f"cancel requested for {args.run}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.student is not None:
        return _export_student(args)
    store = Store(workspace_home(), readonly=True)
    _get_run(store, args.run)
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

    spec = _load_valid_spec(args)
    store = Store(init_workspace())
    job_id, result = _run_job_here(store, CHECK_RUN_ID, JOB_KIND, {"spec_yaml": spec_to_yaml(spec)})
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


def cmd_ablate(args: argparse.Namespace) -> int:
    from engine.ablation import submit_ablation, wait_for_group

    store = Store(init_workspace())
    group_id = submit_ablation(store, args.run)
    queued = [r for r in store.list_runs(group_id=group_id) if r.status == "queued"]
    print(f"{group_id}\t{len(queued)} runs queued")
    if not args.wait:
        return 0
    from engine.worker import serve

    serve(store.home, once=True)
    wait_for_group(store, group_id)  # runs another worker claimed meanwhile
    return cmd_ablation(argparse.Namespace(run=args.run, tolerance=DEFAULT_TOLERANCE))


def _comparison_seeds(text: str, spec_seed: int) -> list[int]:
    """'3' -> three seeds from the spec's; '0,4' -> those seeds."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        numbers = [int(item) for item in items]
    except ValueError:
        raise SpecError([f"--seeds: {text!r} is not a count or a comma-separated list of whole numbers"]) from None
    if len(numbers) == 1 and "," not in text:
        if numbers[0] < 1:
            raise SpecError([f"--seeds: a count must be at least 1, got {numbers[0]}"])
        return [spec_seed + n for n in range(numbers[0])]
    if not numbers:
        raise SpecError(["--seeds: no seed given"])
    return list(dict.fromkeys(numbers))


def cmd_compare(args: argparse.Namespace) -> int:
    from engine.comparison import plan_comparison, submit_comparison
    from engine.spec import spec_to_dict

    base = spec_to_dict(parse_spec(_spec_data(args)))  # every field present, defaults filled in
    weightings = list(dict.fromkeys(w.strip() for w in args.weightings.split(",") if w.strip()))
    if not weightings:
        raise SpecError(["--weightings: no weighting given"])
    plan = plan_comparison(base, weightings, _comparison_seeds(args.seeds, base["seed"]), workspace_home())
    for name, errors in plan.invalid:
        print(f"error: not queued: {name}", file=sys.stderr)
        for line in errors:
            print(f"error:   {line}", file=sys.stderr)
    if not plan.valid:
        return EXIT_INVALID
    store = Store(init_workspace())
    group_id, run_ids = submit_comparison(store, plan)
    print(group_id)
    for run_id, spec in zip(run_ids, plan.valid):
        print(f"{run_id}\t{printable(spec.name)}")
    return 0


def _sweep_specs(args: argparse.Namespace) -> list[RunSpec]:
    """Every variant of the sweep, validated; SpecError listing each invalid one's problems (nothing is queued)."""
    from engine.comparison import check_variant, parse_grid, sweep_variants
    from engine.spec import spec_to_dict

    base = spec_to_dict(parse_spec(_spec_data(args)))
    variants = sweep_variants(base, parse_grid(args.grid, base), _comparison_seeds(args.seeds, base["seed"]))
    specs, errors = [], []
    for variant in variants:
        spec, problems = check_variant(variant, workspace_home())
        errors += [f"{printable(variant['name'])}: {line}" for line in problems]
        specs.append(spec)
    if errors:
        raise SpecError(errors + [f"nothing was queued: {len(variants)} variant(s), fix the spec or the --grid"])
    return specs


def cmd_sweep(args: argparse.Namespace) -> int:
    from engine.executors import ExecutorError, launch

    if args.executor == "local" and (args.address or args.storage):
        raise SpecError(["--address and --storage: only for --executor ray"])
    specs = _sweep_specs(args)
    store = Store(init_workspace())

    def announce(group_id: str, run_ids: list[str]) -> None:
        print(group_id)
        for run_id, spec in zip(run_ids, specs):
            print(f"{run_id}\t{printable(spec.name)}")
        sys.stdout.flush()

    try:
        launched = launch(store, specs, executor=args.executor, address=args.address, storage=args.storage,
                          wait=True, announce=announce)
    except ExecutorError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    if args.executor == "local":
        print(f"sweep {launched.group_id}: {len(launched.run_ids)} runs queued for local workers "
              f"(python -m engine worker trains them)")
        return 0
    return _sweep_summary(launched.group_id, launched.statuses)


def _sweep_summary(group_id: str, statuses: dict[str, str]) -> int:
    """The final status line; exit code 0 when every run is done, 130 when Ctrl-C interrupted some, else 1."""
    counts = {s: list(statuses.values()).count(s) for s in dict.fromkeys(statuses.values())}
    print(f"sweep {group_id}: {len(statuses)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if set(counts) == {"done"}:
        return 0
    return 130 if "interrupted" in counts else 1


def cmd_drive(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.executors import ExecutorError
    from engine.executors.ray_tune import drive_group

    store = Store(init_workspace())
    try:
        statuses = drive_group(store, args.group, args.address, Path(args.storage) if args.storage else None)
    except ExecutorError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID
    return _sweep_summary(args.group, statuses)


def cmd_cluster(args: argparse.Namespace) -> int:
    """Joins the cluster from this process, so the dashboard, which must never listen on Ray's ports, asks
    through this command."""
    from engine.executors.ray_tune import cluster_state

    store = Store(workspace_home(), readonly=True) if db_path(workspace_home()).exists() else None
    state = cluster_state(args.address, store)
    if state["error"]:
        print(f"error: {state['error']}", file=sys.stderr)
    for node in state["nodes"]:
        print(f"{node['host']}\t{node['ip']}\t{'alive' if node['alive'] else 'dead'}\t{node['cpus']:g} CPUs\t"
              f"{node['gpus']:g} GPUs")
    print(json.dumps(state))
    return EXIT_INVALID if state["error"] else 0


def _cell(value: float | None, status: str, signed: bool = False) -> str:
    """A number of accuracy points, or what it waits on."""
    if value is None:
        return status if status != "done" else "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _ablation_line(row: AblationRow) -> list[str]:
    agrees = {True: "yes", False: "NO", None: "-"}[row.agrees]
    return [row.path, row.verdict or "-", str(row.first_flag_step) if row.first_flag_step is not None else "-",
            _cell(row.acc_full, row.status), _cell(row.acc_without, row.status),
            _cell(row.effect, row.status, signed=True), _cell(row.acc_only, row.status),
            _cell(row.acc_no_paths, row.status), _cell(row.alone_gain, row.status, signed=True),
            row.measured or "-", agrees, row.status]


def cmd_ablation(args: argparse.Namespace) -> int:
    from engine.ablation import ablation_progress, ablation_table

    store = Store(workspace_home(), readonly=True)
    rows = ablation_table(store, args.run, args.tolerance)
    done, total = ablation_progress(store, args.run)
    header = ["path", "verdict", "flagged at", "full %", "without %", "effect", "only %", "no paths %",
              "alone gain", "measured", "agrees", "status"]
    lines = [header, *map(_ablation_line, rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print(f"ablation of {args.run}: {done}/{total} runs done; effect = full - without (points), "
          f"neutral within ±{args.tolerance:g}")
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    _load_valid_spec(args)
    print(f"{args.spec}: ok")
    return 0


def _explain_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("run")
    p.add_argument("--method", help="attribution method (default occlusion with --agreement)")
    p.add_argument("--samples", help="comma-separated sample ids, such as 3,17")
    p.add_argument("--checkpoint", default="final", help="final (default) or epoch_NNN")
    p.add_argument("--target", default="label", choices=("label", "predicted"), help="class whose evidence is mapped")
    p.add_argument("--params", help='method params as JSON, such as \'{"n_steps": 16}\'')
    p.add_argument("--smoothgrad", action="store_true", help="average the maps over noisy copies (NoiseTunnel)")
    p.add_argument("--spot", help="feature-map spot for layer_gradcam (default: each model's last)")
    p.add_argument("--agreement", action="store_true", help="student vs each teacher at every saved epoch")
    p.add_argument("--probe-size", type=int, default=32, help="test samples compared by --agreement")
    p.add_argument("--k", type=float, default=0.1, help="top-k share of pixels for --agreement")


def _explain_params(args: argparse.Namespace) -> tuple[str, dict]:
    """The job kind and params the options ask for."""
    params = {"target": args.target, "smoothgrad": args.smoothgrad}
    params.update({name: value for name, value in (("method", args.method), ("spot", args.spot)) if value is not None})
    if args.params is not None:
        try:
            params["params"] = json.loads(args.params)
        except json.JSONDecodeError as err:
            raise SpecError([f"--params: not valid JSON ({err})"]) from None
    if args.agreement:
        return "agreement", {**params, "probe_size": args.probe_size, "k": args.k}
    try:
        samples = [int(s) for s in (args.samples or "").split(",") if s.strip()]
    except ValueError:
        raise SpecError([f"--samples: expected sample ids such as 3,17, got {args.samples!r}"]) from None
    if not samples or not args.method:
        raise SpecError(["--method and --samples are required (or --agreement)"])
    return "explain", {**params, "checkpoint": args.checkpoint, "samples": samples}


def _run_job_here(store: Store, run_id: str, kind: str, params: dict) -> tuple[str, dict | None]:
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


def cmd_explain(args: argparse.Namespace) -> int:
    """Create the job and execute it in this process, as a worker would."""
    from engine.store import run_dir

    kind, params = _explain_params(args)
    store = Store(init_workspace())
    _get_run(store, args.run)
    job_id, result = _run_job_here(store, args.run, kind, params)
    if result is None:
        return 1
    folder = run_dir(store.home, args.run)
    for item in result.get("items", []):
        print(f"{item['model']:<20} sample {item['sample']:>6}: label {item['label']}, predicted {item['predicted']} "
              f"({item['confidence']:.2f}){' [cached]' if item['cached'] else ''}  {folder / item['file']}")
    for tid, curve in result.get("teachers", {}).items():
        print(f"teacher {tid}: spearman {_curve_text(curve['spearman'])}; top-k {_curve_text(curve['topk'])}")
    print(json.dumps({"job_id": job_id, "status": "done", **result}))
    return 0


def _curve_text(values: list[float | None]) -> str:
    return " ".join("-" if v is None else f"{v:.2f}" for v in values)


def _registry(name: str) -> Registry:
    if name == "datasets":
        from engine.data import DATASETS as registry
    elif name == "models":
        from engine.models import MODELS as registry
    elif name == "distillers":
        from engine.paths import DISTILLERS as registry
    elif name == "weightings":
        from engine.weightings import WEIGHTINGS as registry
    else:
        from engine.methods import METHODS as registry
    return registry


def _params_lines(model) -> list[str]:
    """One line per parameter: name, type, default, bounds and what it does (indented under the plugin)."""
    from engine.params import describe_params, format_default

    rows = describe_params(model)
    if not rows:
        return ["(no parameters)"]
    width = max(len(r["name"]) for r in rows)
    lines = []
    for r in rows:
        bounds = f" ({r['bounds']})" if r["bounds"] else ""
        lines.append(f"{r['name']:<{width}}  {r['type']} = {format_default(r['default'])}{bounds}: {r['description']}")
    return lines


def _lister(name: str) -> Callable[[argparse.Namespace], int]:
    def list_entries(_args: argparse.Namespace) -> int:
        for entry in _registry(name):
            print(f"{entry.name:<20} {entry.description}")
            model = getattr(entry.obj, "params_model", None)  # distillers, weightings and methods declare params
            if model is not None:
                for line in _params_lines(model):
                    print(f"    {line}")
        return 0

    return list_entries


def cmd_aggregators(_args: argparse.Namespace) -> int:
    """Spec version 2 split the aggregators in two roles: say which listings name them now."""
    print("error: there are no aggregators since spec version 2: `python -m engine weightings` lists how terms "
          "are weighted (equal, uncertainty, ...), `python -m engine methods` the path methods (amtml, camkd, ...)",
          file=sys.stderr)
    return EXIT_INVALID


def _spots_for(model: str, args: argparse.Namespace):
    from engine.models import MODELS
    from engine.models.spots import list_spots

    try:
        shape = tuple(int(v) for v in args.input.lower().split("x"))
        assert len(shape) == 3
    except (ValueError, AssertionError):
        raise SpecError([f"--input: expected CxHxW such as 3x32x32, got {args.input!r}"]) from None
    if model not in MODELS:  # the registry's message names the registered models and the families
        try:
            MODELS.entry(model)
        except KeyError as err:
            raise SpecError([f"model: {err}"]) from None
    try:
        return list_spots(model, shape, args.classes, {})
    except (TypeError, ValueError, RuntimeError) as err:
        raise SpecError([f"model: {model} cannot be built for input {args.input}: {err}"]) from None


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
