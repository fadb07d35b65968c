"""Semantic validation of a RunSpec against the registries, the models' spots and the workspace.

``engine.spec`` checks structure and types; this module checks that every name exists and
every path can be built, and reports every problem as 'field.path: what is wrong'.
"""
from __future__ import annotations

from pathlib import Path

from engine.aggregators import AGGREGATORS
from engine.data import DATASETS, dataset_signature
from engine.data.bundle import DatasetError
from engine.models import MODELS
from engine.models.spots import SpotInfo, list_spots
from engine.paths import DISTILLERS
from engine.spec import RunSpec, SpecError, spec_from_yaml
from engine.store import Store, WorkspaceError, run_dir


def validate_spec(spec: RunSpec, home: Path | None = None) -> list[str]:
    """Every problem of the spec; an empty list means it can run."""
    errors: list[str] = []
    if spec.dataset.name not in DATASETS:
        return [f"dataset.name: {_unknown('dataset', spec.dataset.name, DATASETS.names())}"]
    try:
        input_shape, num_classes = dataset_signature(spec.dataset)
    except DatasetError as err:
        return [f"dataset: {err}"]
    spots: dict[str, dict[str, SpotInfo]] = {}
    student_spots = _spots_of("student", spec.student.arch, spec.student.arch_params, input_shape, num_classes, errors)
    for i, teacher in enumerate(spec.teachers):
        found = _spots_of(f"teachers[{i}]", teacher.arch, teacher.arch_params, input_shape, num_classes, errors)
        if found is not None:
            spots[teacher.id] = found
        errors += _source_errors(i, teacher, spec, home)
    for i, path in enumerate(spec.paths):
        errors += _path_errors(i, path, spec, spots, student_spots)
    errors += _aggregator_errors(spec)
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


def _source_errors(i: int, teacher, spec: RunSpec, home: Path | None) -> list[str]:
    source = teacher.source
    where = f"teachers[{i}].source"
    if source.kind == "checkpoint":
        if not Path(source.path).is_file():
            return [f"{where}.path: no checkpoint file at {source.path}"]
    elif source.kind == "run":
        return _teacher_run_errors(where, teacher, source.run_id, home)
    return []


def _teacher_run_errors(where: str, teacher, run_id: str, home: Path | None) -> list[str]:
    try:
        store = Store(home, readonly=True)
    except WorkspaceError as err:
        return [f"{where}.run_id: {err}"]
    try:
        run = store.get_run(run_id)
    finally:
        store.close()
    if run is None:
        return [f"{where}.run_id: no run {run_id!r} in the workspace"]
    if run.status != "done":
        return [f"{where}.run_id: run {run_id} is {run.status}, not done"]
    arch = spec_from_yaml(run.spec_yaml).student.arch
    if arch != teacher.arch:
        return [f"{where}.run_id: run {run_id} trained a {arch}, but this teacher is a {teacher.arch}"]
    if not (run_dir(store.home, run_id) / "checkpoints" / "final.pt").exists():
        return [f"{where}.run_id: run {run_id} has no final checkpoint"]
    return []


def _path_errors(i: int, path, spec: RunSpec, spots: dict[str, dict[str, SpotInfo]],
                 student_spots: dict[str, SpotInfo] | None) -> list[str]:
    where = f"paths[{i}]"
    teacher_ids = [t.id for t in spec.teachers]
    if path.teacher not in teacher_ids:
        known = ", ".join(teacher_ids) or "none defined"
        return [f"{where}.teacher: unknown teacher {path.teacher!r} (teachers: {known})"]
    if path.distiller not in DISTILLERS:
        return [f"{where}.distiller: {_unknown('distiller', path.distiller, DISTILLERS.names())}"]
    teacher_arch = next(t.arch for t in spec.teachers if t.id == path.teacher)
    errors = []
    t_spot = _spot_error(errors, f"{where}.teacher_spot", path.teacher_spot, teacher_arch, spots.get(path.teacher))
    s_spot = _spot_error(errors, f"{where}.student_spot", path.student_spot, spec.student.arch, student_spots)
    if errors or t_spot is None or s_spot is None:
        return errors
    distiller = DISTILLERS.get(path.distiller)
    for field, spot in (("teacher_spot", t_spot), ("student_spot", s_spot)):
        if spot.kind not in distiller.accepts:
            errors.append(f"{where}.{field}: {path.distiller} needs a spot of kind {' or '.join(distiller.accepts)}, "
                          f"but {spot.name!r} is a {spot.kind} {spot.shape}")
    if errors:
        return errors
    problem = distiller.shape_problem(s_spot.shape, t_spot.shape)
    if problem:
        errors.append(f"{where} ({path.id}): {path.distiller} {problem} "
                      f"(student {s_spot.name} {s_spot.shape}, teacher {t_spot.name} {t_spot.shape})")
    else:
        errors += _distiller_param_errors(where, path, distiller, s_spot, t_spot)
    return errors


def _spot_error(errors: list[str], field: str, name: str, arch: str, known: dict[str, SpotInfo] | None
                ) -> SpotInfo | None:
    if known is None:  # the architecture itself is wrong; already reported
        return None
    if name not in known:
        errors.append(f"{field}: {name!r} is not a spot of {arch} (spots: {', '.join(known)})")
        return None
    return known[name]


def _distiller_param_errors(where: str, path, distiller, s_spot: SpotInfo, t_spot: SpotInfo) -> list[str]:
    try:
        distiller(s_spot.shape, t_spot.shape, **path.params)
    except (TypeError, ValueError) as err:
        return [f"{where}.params: {err}"]
    return []


def _aggregator_errors(spec: RunSpec) -> list[str]:
    name = spec.aggregator.name
    if name not in AGGREGATORS:
        return [f"aggregator.name: {_unknown('aggregator', name, AGGREGATORS.names())}"]
    ids = [p.id for p in spec.active_paths]
    try:
        AGGREGATORS.get(name)(ids, {pid: 1.0 for pid in ids}, **spec.aggregator.params)
    except (TypeError, ValueError) as err:
        return [f"aggregator.params: {err}"]
    return []
