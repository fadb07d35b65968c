"""Semantic validation of a RunSpec against the registries, the models' spots and the workspace.

``engine.spec`` checks structure and types; this module checks that every name exists and
every path can be built, and reports every problem as 'field.path: what is wrong'.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

from engine.distributed.checks import distributed_errors
from engine.methods import METHODS
from engine.step import PathRoute
from engine.weightings import WEIGHTINGS
from engine.data import DATASETS, dataset_signature
from engine.data.bundle import DatasetError
from engine.diagnostics.planted import STRENGTH as DEFECT_STRENGTHS, defect_strength
from engine.models import MODELS, build_model
from engine.models.weights import load_source, weights_file
from engine.models.spots import SpotInfo, list_spots
from engine.paths import DISTILLERS
from engine.params import ParamsError, parse_params
from engine.paths.base import DataInfo, split_spot
from engine.spec import CheckpointSource, DatasetSpec, PretrainedSource, RunSource, RunSpec, SpecError, spec_from_yaml
from engine.store import Store, WorkspaceError, run_dir


_SOURCES = {"checkpoint": CheckpointSource, "run": RunSource, "pretrained": PretrainedSource}


def validate_spec(spec: RunSpec, home: Path | None = None) -> list[str]:
    """Every problem of the spec; an empty list means it can run."""
    errors: list[str] = []
    if spec.dataset.name not in DATASETS:
        return [f"dataset.name: {_unknown('dataset', spec.dataset.name, DATASETS.names())}"]
    try:
        input_shape, num_classes = dataset_signature(spec.dataset)
    except DatasetError as err:
        message = str(err)  # a problem of one field already starts with its name
        return [message if message.startswith("dataset.") else f"dataset: {message}"]
    spots: dict[str, dict[str, SpotInfo]] = {}
    student_spots = _spots_of("student", spec.student.arch, spec.student.arch_params, input_shape, num_classes, errors)
    if student_spots is not None:  # a source can only be checked against an architecture that builds
        errors += _source_errors("student.source", "student", spec.student, home, input_shape, num_classes)
    for i, teacher in enumerate(spec.teachers):
        found = _spots_of(f"teachers[{i}]", teacher.arch, teacher.arch_params, input_shape, num_classes, errors)
        if found is not None:
            spots[teacher.id] = found
        if found is not None:  # a source can only be checked against an architecture that builds
            errors += _source_errors(f"teachers[{i}].source", "teacher", teacher, home, input_shape, num_classes)
    for i, path in enumerate(spec.paths):
        errors += _path_errors(i, path, spec, spots, student_spots, num_classes)
    errors += _weighting_errors(spec) + _method_errors(spec)
    if spec.distributed.nproc > 1:  # the machine's device count is checked where the processes start
        errors += distributed_errors(spec)
    return errors


#: dataset fields only a dataset that streams from disk reads
STREAMING_FIELDS = ("stream", "memory_limit_mb", "loader_workers")


def spec_warnings(spec: RunSpec) -> list[str]:
    """Fields the spec gives a value that its dataset ignores (its registration's ``ignores``, and the streaming
    fields of a dataset that never streams), as 'dataset.root: digits ignores it (...)': a spec that says more
    than it does would mislead whoever reads it."""
    if spec.dataset.name not in DATASETS:
        return []
    meta = DATASETS.entry(spec.dataset.name).meta
    ignored = [*meta.get("ignores", ()), *(() if meta.get("streams") else STREAMING_FIELDS)]
    defaults = DatasetSpec.model_fields
    return [f"dataset.{field}: {spec.dataset.name} ignores it (given {getattr(spec.dataset, field)!r}); "
            f"remove it from the spec" for field in ignored
            if field in spec.dataset.model_fields_set and getattr(spec.dataset, field) != defaults[field].default]


def params_errors(spec: RunSpec) -> list[str]:
    """Every path's, the weighting's and the method's ``params`` against the plugin's params model, as
    'paths[2].params.temperature: Input should be greater than 0' (unknown plugin names are skipped:
    validate_spec names them). Needs only the registries, so the runner checks a spec with it too."""
    errors: list[str] = []
    plugins = [(f"paths[{i}].params", DISTILLERS, p.distiller, p.params) for i, p in enumerate(spec.paths)]
    plugins.append(("weighting.params", WEIGHTINGS, spec.weighting.name, spec.weighting.params))
    if spec.method is not None:
        plugins.append(("method.params", METHODS, spec.method.name, spec.method.params))
    for where, registry, name, params in plugins:
        if name not in registry:
            continue
        try:
            parse_params(registry.get(name).params_model, params)
        except ParamsError as err:
            errors += err.lines(where)
    return errors


def check_spec(spec: RunSpec, home: Path | None = None) -> RunSpec:
    """Raise SpecError listing every problem, or return the spec unchanged."""
    errors = validate_spec(spec, home)
    if errors:
        raise SpecError(errors)
    return spec


def _unknown(kind: str, name: str, known: list[str]) -> str:
    return f"unknown {kind} {name!r} (known: {', '.join(known)})"


def _spots_of(field: str, arch: str, params: dict, input_shape: tuple[int, ...], num_classes: int,
              errors: list[str]) -> dict[str, SpotInfo] | None:
    if arch not in MODELS:
        errors.append(f"{field}.arch: {_unknown('architecture', arch, MODELS.names())}")
        return None
    try:
        return {s.name: s for s in list_spots(arch, tuple(input_shape), num_classes, dict(params))}
    except (TypeError, ValueError, RuntimeError) as err:
        errors.append(f"{field}.arch_params: {arch} cannot be built for input {tuple(input_shape)}: {err}")
        return None


def _source_errors(where: str, role: str, model_spec, home: Path | None, input_shape: tuple[int, ...],
                   num_classes: int) -> list[str]:
    """Load the source's weights into the architecture now, so a file that does not fit, a head of the wrong
    size or published weights that are not on this machine are named before the run starts."""
    source = model_spec.source
    if source.kind == "train":
        return _defect_errors(where, source)
    if source.kind == "scratch":
        return []
    field = {"checkpoint": f"{where}.path", "run": f"{where}.run_id"}.get(source.kind, where)
    if source.kind == "pretrained" and source.path:
        field = f"{where}.path"
    if source.kind == "run":
        errors, path = _run_errors(field, role, model_spec.arch, source.run_id, home)
        if errors:
            return errors
    else:
        try:
            path = weights_file(model_spec.arch, source, lambda run_id: Path())
        except ValueError as err:  # published weights absent while offline: says which file to put where
            return [f"{field}: {err}"]
    if not path.is_file():
        return [f"{field}: no checkpoint file at {path}"]
    stat = path.stat()
    problem = _load_problem(model_spec.arch, json.dumps(model_spec.arch_params, sort_keys=True, default=str),
                            tuple(input_shape), num_classes, json.dumps(source.model_dump(mode="json"), sort_keys=True),
                            role, str(path), stat.st_mtime_ns, stat.st_size)
    return [f"{field}: {problem}"] if problem else []


def _defect_errors(where: str, source) -> list[str]:
    """A planted defect's strength, refused before any run exists: out of its range, or set on a defect
    that has none (it would be ignored, yet change the teacher's cache key)."""
    if source.strength is None:
        return []
    if source.defect not in DEFECT_STRENGTHS:
        takes = ", ".join(DEFECT_STRENGTHS)
        return [f"{where}.strength: defect {source.defect} takes no strength (only {takes} do)"]
    try:
        defect_strength(source.defect, source.strength)
    except ValueError as err:
        return [f"{where}.strength: {err}"]
    return []


@lru_cache(maxsize=64)
def _load_problem(arch: str, params_json: str, input_shape: tuple[int, ...], num_classes: int, source_json: str,
                  role: str, path: str, mtime_ns: int, size: int) -> str | None:
    """Why the file cannot initialise the model, or None (memoised per file version: Configure validates often)."""
    data = json.loads(source_json)
    source = _SOURCES[data["kind"]](**data)
    with torch.random.fork_rng(devices=[]):  # checking a spec must not change what a run draws next
        model = build_model(arch, num_classes, input_shape[0], input_shape[1], json.loads(params_json))
    try:
        load_source(model, arch, source, role, lambda run_id: Path(path))
    except ValueError as err:
        return str(err)
    return None


def _run_errors(where: str, role: str, arch: str, run_id: str, home: Path | None) -> tuple[list[str], Path]:
    try:
        store = Store(home, readonly=True)
    except WorkspaceError as err:
        return [f"{where}: {err}"], Path()
    try:
        run = store.get_run(run_id)
    finally:
        store.close()
    if run is None:
        return [f"{where}: no run {run_id!r} in the workspace"], Path()
    if run.status != "done":
        return [f"{where}: run {run_id} is {run.status}, not done"], Path()
    trained = spec_from_yaml(run.spec_yaml).student.arch
    if trained != arch:
        return [f"{where}: run {run_id} trained a {trained}, but this {role} is a {arch}"], Path()
    path = run_dir(store.home, run_id) / "checkpoints" / "final.pt"
    if not path.exists():
        return [f"{where}: run {run_id} has no final checkpoint"], Path()
    return [], path


def _path_errors(i: int, path, spec: RunSpec, spots: dict[str, dict[str, SpotInfo]],
                 student_spots: dict[str, SpotInfo] | None, num_classes: int) -> list[str]:
    where = f"paths[{i}]"
    teacher_ids = [t.id for t in spec.teachers]
    if path.teacher not in teacher_ids:
        known = ", ".join(teacher_ids) or "none defined"
        return [f"{where}.teacher: unknown teacher {path.teacher!r} (teachers: {known})"]
    if path.distiller not in DISTILLERS:
        return [f"{where}.distiller: {_unknown('distiller', path.distiller, DISTILLERS.names())}"]
    distiller = DISTILLERS.get(path.distiller)
    teacher_arch = next(t.arch for t in spec.teachers if t.id == path.teacher)
    try:
        parse_params(distiller.params_model, path.params)
        bad_params: list[str] = []
    except ParamsError as err:
        bad_params = err.lines(f"{where}.params")
    errors: list[str] = []
    t_taps = _resolve_spot(errors, f"{where}.teacher_spot", path.teacher_spot, teacher_arch,
                           spots.get(path.teacher), distiller, path.distiller)
    s_taps = _resolve_spot(errors, f"{where}.student_spot", path.student_spot, spec.student.arch,
                           student_spots, distiller, path.distiller)
    if errors or t_taps is None or s_taps is None:
        return errors + bad_params
    s_shape, t_shape = _shape_of(s_taps), _shape_of(t_taps)
    problem = distiller.shape_problem(s_shape, t_shape)
    if problem:
        return [f"{where} ({path.id}): {path.distiller} {problem} "
                f"(student {path.student_spot} {s_shape}, teacher {path.teacher_spot} {t_shape})"] + bad_params
    if bad_params:
        return bad_params
    try:
        distiller(s_shape, t_shape, DataInfo(num_classes=num_classes, num_samples=1), **path.params)
    except (TypeError, ValueError) as err:
        return [f"{where}.params: {err}"]
    return []


def _resolve_spot(errors: list[str], field: str, spot: str, arch: str, known: dict[str, SpotInfo] | None,
                  distiller, distiller_name: str) -> list[SpotInfo] | None:
    """The SpotInfos a (possibly compound) spot names, or None after recording why not."""
    if known is None:  # the architecture itself is wrong; already reported
        return None
    names = split_spot(spot)
    if len(names) != distiller.spots_per_side:
        example = "+".join(list(known)[: distiller.spots_per_side])
        errors.append(f"{field}: {distiller_name} reads {distiller.spots_per_side} spot(s) per side "
                      f"joined by '+' (e.g. {example!r}), got {spot!r}")
        return None
    found = []
    for name in names:
        if name not in known:
            errors.append(f"{field}: {name!r} is not a spot of {arch} (spots: {', '.join(known)})")
            return None
        info = known[name]
        if info.kind not in distiller.accepts:
            errors.append(f"{field}: {distiller_name} needs a spot of kind {' or '.join(distiller.accepts)}, "
                          f"but {name!r} is a {info.kind} {info.shape}")
            return None
        found.append(info)
    return found


def _shape_of(taps: list[SpotInfo]) -> tuple:
    return taps[0].shape if len(taps) == 1 else tuple(t.shape for t in taps)


def _weighting_errors(spec: RunSpec) -> list[str]:
    name = spec.weighting.name
    if name not in WEIGHTINGS:
        return [f"weighting.name: {_unknown('weighting', name, WEIGHTINGS.names())}"]
    if WEIGHTINGS.get(name).needs_probe and not spec.diagnostics.enabled:
        return [f"weighting: {name} is driven by the negative-transfer probe: set diagnostics.enabled: true"]
    try:
        parse_params(WEIGHTINGS.get(name).params_model, spec.weighting.params)
    except ParamsError as err:
        return err.lines("weighting.params")
    return []


def _method_errors(spec: RunSpec) -> list[str]:
    if spec.method is None:
        return []
    name = spec.method.name
    if name not in METHODS:
        return [f"method.name: {_unknown('method', name, METHODS.names())}"]
    paths = spec.active_paths
    try:
        method = METHODS.get(name)([p.id for p in paths], {p.id: 1.0 for p in paths},
                                   {p.id: p.distiller for p in paths}, **spec.method.params)
    except ParamsError as err:
        return err.lines("method.params")
    except (TypeError, ValueError) as err:
        return [f"method.params: {err}"]
    try:  # what a method needs of the paths (SAKD's routable spots) is checked here, before any work
        method.wanted_spots([t.id for t in spec.teachers], {p.id: PathRoute(p.teacher, p.teacher_spot, p.student_spot)
                                                              for p in paths})
    except ValueError as err:
        return [f"method: {name} cannot use these paths: {err}"]
    return []
