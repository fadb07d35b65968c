"""Teacher checks: each frozen teacher's accuracy on the real test split, measured once and cached.

A teacher's test accuracy depends only on its weights and on the test data, so it is stored under
<workspace>/cache/teacher-acc/<teacher fingerprint>-<data fingerprint>.json (the same fingerprints as the
teacher-output cache) and reused by every later run and by the Configure page's "Check teachers".

- ``measure_teacher_accuracy``: the measurement itself (cached);
- ``report_teacher_accuracy``: what a run does for each teacher: measure (or take an inline teacher's known
  accuracy) and log the event ``{"teacher", "test_acc", "test_samples", "cached"}``;
- the ``teacher_check`` job (registered in engine/jobs.py): a spec in, ``{teacher id: {"test_acc",
  "test_samples", "cached"}}`` out, before any run exists. Such jobs have no run: their ``run_id`` is
  ``CHECK_RUN_ID`` (""). ``submit_teacher_check`` queues one, ``teacher_check_status`` reads it back.

Inline (``train``) teachers that are not trained yet are not trained by a check: their entry carries
``test_acc: None`` and ``note`` = ``TRAINED_INSIDE``. Once a run has trained one (it is cached in
workspace/teachers/), a check reuses that teacher and reports its accuracy.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from engine.data.bundle import DataBundle
from engine.data.teacher_cache import data_fingerprint, teacher_fingerprint
from engine.spec import DatasetSpec, RunSpec, TeacherSpec, TrainSource, spec_from_yaml
from engine.store import JobRow, Store
from engine.workspace import cache_dir
from engine.train import Reporter, evaluate

#: the run_id of jobs that belong to no run (a check before launch)
CHECK_RUN_ID = ""
JOB_KIND = "teacher_check"
ACC_FOLDER = "teacher-acc"
#: the note of an inline teacher a check does not train
TRAINED_INSIDE = "trained inside the run: accuracy known after training"


@dataclass(frozen=True)
class TeacherAccuracy:
    test_acc: float
    test_samples: int
    cached: bool  # True when read back from the workspace cache instead of measured now

    def as_dict(self) -> dict[str, Any]:
        return {"test_acc": self.test_acc, "test_samples": self.test_samples, "cached": self.cached}


def eval_data_fingerprint(dataset: DatasetSpec, content: str = "") -> str:
    """The teacher-output cache's data fingerprint, without what changes only the training views.

    ``content``: ``DataBundle.fingerprint`` (an image folder's files), so edited images are measured again."""
    return data_fingerprint(dataset.model_copy(update={"augment": "none"}), 1, 0, False, content)


def accuracy_cache_file(home: Path, model: nn.Module, dataset: DatasetSpec, content: str = "") -> Path:
    data = eval_data_fingerprint(dataset, content)
    return cache_dir(Path(home)) / ACC_FOLDER / f"{teacher_fingerprint(model)}-{data}.json"


def _read_cached(path: Path) -> TeacherAccuracy | None:
    try:
        saved = json.loads(path.read_text())
        return TeacherAccuracy(float(saved["test_acc"]), int(saved["test_samples"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError):  # absent or damaged: measure again
        return None


def _write_cached(path: Path, accuracy: TeacherAccuracy) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"test_acc": accuracy.test_acc, "test_samples": accuracy.test_samples,
                               "measured_at": time.time()}))
    os.replace(tmp, path)


def measure_teacher_accuracy(model: nn.Module, bundle: DataBundle, dataset: DatasetSpec, home: Path,
                             device: torch.device, known: float | None = None) -> TeacherAccuracy:
    """Top-1 accuracy of a frozen teacher on ``bundle.test``, from the workspace cache when measured before.

    ``known``: an accuracy already measured on this test split (an inline teacher's, after training): it is
    stored, not measured again.
    """
    path = accuracy_cache_file(home, model, dataset, bundle.fingerprint)
    found = _read_cached(path)
    if found is not None and found.test_samples == len(bundle.test):
        return found
    if known is None:
        known, _ = evaluate(model, bundle.test, device)
    accuracy = TeacherAccuracy(float(known), len(bundle.test), cached=False)
    try:
        _write_cached(path, accuracy)
    except OSError:  # a read-only cache costs a re-measure next time, never the run
        pass
    return accuracy


def teacher_event(tid: str, accuracy: TeacherAccuracy) -> tuple[str, dict[str, Any]]:
    """The run event of a teacher's test accuracy: its message and data."""
    reused = " (cached)" if accuracy.cached else ""
    message = (f"teacher {tid}: test accuracy {100 * accuracy.test_acc:.2f}% on {accuracy.test_samples:,} "
               f"test images{reused}")
    return message, {"teacher": tid, **accuracy.as_dict()}


def report_teacher_accuracy(tspec: TeacherSpec, spec: RunSpec, model: nn.Module, bundle: DataBundle, home: Path,
                            device: torch.device, reporter: Reporter, known: float | None = None) -> float:
    """Measure (or take the known) test accuracy of a prepared teacher, log it as an event, return it."""
    accuracy = measure_teacher_accuracy(model, bundle, spec.dataset, home, device, known)
    message, data = teacher_event(tspec.id, accuracy)
    reporter.event("info", message, data)
    return accuracy.test_acc


# ------------------------------------------------------------------ the check before launch
class _Collector:
    """A reporter that keeps the events of preparing a teacher (for their data) and nothing else."""

    def __init__(self) -> None:
        self.data: list[dict[str, Any]] = []

    def event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        if data:
            self.data.append(data)

    def log(self, *args: Any) -> None: ...
    def log_array(self, *args: Any) -> None: ...
    def progress(self, *args: Any) -> None: ...
    def check_stop(self) -> None: ...
    def truncate(self, *args: Any) -> None: ...
    def flush(self) -> None: ...


def check_teachers(spec: RunSpec, home: Path, progress: Callable[[float], None] = lambda f: None
                   ) -> dict[str, dict[str, Any]]:
    """{teacher id: {"test_acc", "test_samples", "cached"}} for every teacher of ``spec``.

    Teachers are prepared exactly as a run prepares them (same code, same cache), so the check reports
    what the run will. A teacher that cannot be loaded gets ``test_acc: None`` and ``error``; an inline
    teacher not trained yet gets ``test_acc: None`` and ``note``.
    """
    from engine.data import load_dataset
    from engine.runner import prepare_teacher, teacher_cache_path
    from engine.runtime import resolve_device

    device = resolve_device(spec.device)
    bundle = load_dataset(spec.dataset, cache_dir(Path(home)))
    progress(0.2)
    results: dict[str, dict[str, Any]] = {}
    for n, tspec in enumerate(spec.teachers):
        entry: dict[str, Any] = {"test_acc": None, "test_samples": len(bundle.test), "cached": False}
        if isinstance(tspec.source, TrainSource) and not teacher_cache_path(tspec, spec, home).exists():
            entry["note"] = TRAINED_INSIDE
        else:
            collector = _Collector()
            try:
                prepare_teacher(tspec, spec, bundle, home, device, collector, lambda f: None)
            except (ValueError, OSError) as err:  # a bad checkpoint names itself; the other teachers still count
                entry["error"] = str(err)
            else:
                found = [d for d in collector.data if d.get("teacher") == tspec.id and "test_acc" in d]
                if found:
                    entry.update({k: found[-1][k] for k in ("test_acc", "test_samples", "cached")})
        results[tspec.id] = entry
        progress(0.2 + 0.8 * (n + 1) / max(len(spec.teachers), 1))
    return results


def teacher_check_job(store: Store, job: JobRow, progress: Callable[[float], None]) -> dict[str, Any]:
    """Job handler: params {"spec_yaml": ...} -> {teacher id: {"test_acc", "test_samples", "cached"}}."""
    from engine.validate import check_spec

    spec_yaml = job.params.get("spec_yaml")
    if not isinstance(spec_yaml, str):
        raise ValueError("spec_yaml: the job needs the spec as YAML text")
    spec = check_spec(spec_from_yaml(spec_yaml), store.home)
    return check_teachers(spec, store.home, progress)


def submit_teacher_check(store: Store, spec_yaml: str) -> str:
    """Queue a check of the spec's teachers for a worker; returns the job id (see ``teacher_check_status``).

    The spec is parsed first, so a spec that cannot be read raises SpecError here, not in the worker.
    """
    spec_from_yaml(spec_yaml)
    return store.create_job(CHECK_RUN_ID, JOB_KIND, {"spec_yaml": spec_yaml})


def teacher_check_status(store: Store, job_id: str) -> dict[str, Any] | None:
    """{"status", "progress", "error", "teachers"} of a check job (teachers: {} until done); None if unknown."""
    job = store.get_job(job_id)
    if job is None or job.kind != JOB_KIND:
        return None
    return {"status": job.status, "progress": job.progress, "error": job.error,
            "teachers": job.result if job.status == "done" else {}}
