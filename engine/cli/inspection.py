"""Commands that look inside: explain (attribution maps), the registries' listings, spots and candidates."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from engine.cli.common import EXIT_INVALID, Command, get_run, run_job_here
from engine.registry import Registry
from engine.spec import SpecError
from engine.store import Store, init_workspace


def register(command: Command) -> None:
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


def cmd_explain(args: argparse.Namespace) -> int:
    """Create the job and execute it in this process, as a worker would."""
    from engine.store import run_dir

    kind, params = _explain_params(args)
    store = Store(init_workspace())
    get_run(store, args.run)
    job_id, result = run_job_here(store, args.run, kind, params)
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


def _shape_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", default="3x32x32", help="input shape CxHxW (default 3x32x32)")
    p.add_argument("--classes", type=int, default=10)


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
