"""Commands for groups of runs: ablate and its table (ablation), compare, sweep, drive, cluster."""
from __future__ import annotations

import argparse
import json
import sys

from engine.ablation import DEFAULT_TOLERANCE, AblationRow
from engine.cli.common import EXIT_INVALID, Command, spec_data, spec_options
from engine.spec import RunSpec, SpecError, parse_spec, printable
from engine.store import Store, db_path, init_workspace, workspace_home


def register(command: Command) -> None:
    p = command("ablate", cmd_ablate, "queue the runs that measure each path's effect on accuracy "
                                      "(without it, it alone, no paths); prints the group id")
    p.add_argument("run")
    p.add_argument("--wait", action="store_true", help="train them here, then print the table")
    p = command("compare", cmd_compare, "queue a spec under several weightings x seeds in one comparison group "
                                        "(each keeps the spec's path method); prints the group id and the runs")
    spec_options(p)
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


def _sweep_options(p: argparse.ArgumentParser) -> None:
    from engine.executors import EXECUTORS

    spec_options(p)
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

    base = spec_to_dict(parse_spec(spec_data(args)))  # every field present, defaults filled in
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

    base = spec_to_dict(parse_spec(spec_data(args)))
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
    from engine.executors.ray_cluster import cluster_state

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
