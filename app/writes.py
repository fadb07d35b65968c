"""The UI's write side, beside ``app/cached.py`` (the read side).

Every write the pages make goes through here: queue runs, cancel a run, queue a job (attribution
maps, teacher checks), queue an ablation or a comparison, save an uploaded checkpoint, start a
worker, tag, annotate, archive or delete runs. This is the only module of ``app/`` and ``pages/`` that opens a writable store or starts a
worker (tests/test_write_side.py checks it); everything else reads through ``app.cached``.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from app import cached
from app.widgets import SELECTED_RUN
from app.worker_control import ensure_worker
from engine.ablation import submit_ablation as queue_ablation
from engine.comparison import ComparisonPlan, plan_comparison, queue_group
from engine.comparison import submit_comparison as queue_comparison
from engine.spec import RunSpec
from engine import catalog
from engine.store import Store, WorkspaceError
from engine.teacher_check import submit_teacher_check as queue_teacher_check


@dataclass(frozen=True)
class RayTarget:
    """Where a comparison goes on Ray: ``address`` None starts a Ray instance on this machine, "auto" joins the
    one `ray start` started here, "host:port" a cluster's head; ``storage`` None: the workspace."""

    address: str | None = None
    storage: str | None = None


def _writer(home: str | Path) -> closing[Store]:
    return closing(Store(Path(home)))


def start_worker(home: str | Path) -> int | None:
    """Spawn a worker for the workspace unless one is alive or starting; the new pid, if any."""
    return ensure_worker(Path(home))


def _queued(home: str | Path, run_ids: list[str]) -> list[str]:
    # The next page (often Live, within the cache's second) must list the new runs, or it would show
    # "No runs yet" and, with nothing active, never poll again.
    cached.runs.clear()
    start_worker(home)
    if run_ids:
        st.session_state[SELECTED_RUN] = run_ids[-1]
    return run_ids


def submit_runs(home: str | Path, specs: list[RunSpec], group_id: str | None = None) -> list[str]:
    """Queue ``specs`` (in one group when given), make sure a worker will pick them up, select the last."""
    with _writer(home) as store:
        run_ids = queue_group(store, specs, group_id)
    return _queued(home, run_ids)


def submit_run(home: str | Path, spec: RunSpec) -> str:
    """Queue ``spec``, make sure a worker will pick it up, and select it for the Live page."""
    return submit_runs(home, [spec])[0]


def cancel_run(home: str | Path, run_id: str) -> None:
    """Ask the run's worker to stop it at the next step (a queued run ends at once)."""
    with _writer(home) as store:
        store.request_cancel(run_id)


def resume_run(home: str | Path, run_id: str) -> bool:
    """Queue an interrupted or failed run again from its last checkpoint, and make sure a worker takes it."""
    with _writer(home) as store:
        queued = store.resume_run(run_id)
    if queued:
        _queued(home, [run_id])
    return queued


def submit_job(home: str | Path, run_id: str, kind: str, params: dict[str, Any]) -> str:
    """Queue a job of a run (attribution maps, sample index, agreement) for a worker; the job id."""
    with _writer(home) as store:
        job_id = store.create_job(run_id, kind, params)
    start_worker(home)
    return job_id


def submit_teacher_check(home: str | Path, spec_yaml: str) -> str:
    """Queue a measurement of the spec's teachers on its test split; a worker takes it before any run."""
    with _writer(home) as store:
        job_id = queue_teacher_check(store, spec_yaml)
    start_worker(home)
    return job_id


def submit_ablation(home: str | Path, run_id: str) -> tuple[str, int]:
    """Queue the run's ablation variants; (group id, runs queued in it). Raises AblationError."""
    with _writer(home) as store:
        group_id = queue_ablation(store, run_id)
        queued = sum(r.status == "queued" for r in store.list_runs(group_id=group_id))
    start_worker(home)
    cached.ablation.clear()
    return group_id, queued


def plan(spec: dict[str, Any], weightings: list[str], seeds: list[int], home: str | Path) -> ComparisonPlan:
    """The comparison's variants (one per weighting and seed) checked one by one (no write): those that can run
    and those that cannot."""
    return plan_comparison(spec, weightings, seeds, Path(home))


def submit_comparison(home: str | Path, comparison: ComparisonPlan, ray: RayTarget | None = None
                      ) -> tuple[str | None, list[str]]:
    """Start a planned comparison's valid variants in one new group; (group id or None, run ids).

    Without ``ray`` they are queued for this machine's workers (one is started); with it, a background driver
    runs them as trials on that Ray cluster and keeps going when the dashboard closes. Raises
    engine.executors.ExecutorError (one line) when the cluster or the storage cannot take them.
    """
    if not comparison.valid:
        return None, []
    if ray is not None:
        from engine.executors import launch

        with _writer(home) as store:
            launched = launch(store, comparison.valid, executor="ray", address=ray.address, storage=ray.storage,
                              wait=False)
        return launched.group_id, launched.run_ids
    with _writer(home) as store:
        group_id, run_ids = queue_comparison(store, comparison)
    return group_id, _queued(home, run_ids)


def uploads_dir(home: str | Path) -> Path:
    return Path(home) / "uploads"


@dataclass(frozen=True)
class SavedUpload:
    """Where an upload went: ``path``; ``reused``: those bytes were there already; ``renamed_from``: the name it
    came with, when that name held other bytes (which finished runs may name, so they are kept)."""
    path: Path
    reused: bool = False
    renamed_from: str | None = None

    def describe(self) -> str:
        if self.reused:
            return f"Already in the workspace as {self.path} (the same bytes; nothing was written)"
        if self.renamed_from:
            return (f"Saved as {self.path} ({self.renamed_from} there holds different bytes, which runs may "
                    "name: it was kept unchanged)")
        return f"Saved as {self.path}"


def _candidates(folder: Path, name: str, data: bytes) -> Iterator[Path]:
    """The upload's own name, then that name tagged with the content's hash, then numbered (a file copied by hand
    may hold any name)."""
    yield folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    tagged = f"{stem}-{hashlib.sha256(data).hexdigest()[:12]}"
    yield folder / f"{tagged}{suffix}"
    for n in itertools.count(2):
        yield folder / f"{tagged}-{n}{suffix}"


def _claim(temporary: str, candidate: Path, data: bytes, asked: str) -> SavedUpload | None:
    """``candidate`` made the upload (a hard link of the written temporary file: atomic, and it fails when the name
    exists, so neither a concurrent upload nor a reader such as a worker loading a teacher sees half a file),
    or found holding these very bytes; None when it holds other bytes."""
    try:
        os.link(temporary, candidate)
    except FileExistsError:
        same = candidate.is_file() and candidate.stat().st_size == len(data) and candidate.read_bytes() == data
        return SavedUpload(candidate, reused=True) if same else None
    return SavedUpload(candidate, renamed_from=None if candidate.name == asked else asked)


def save_upload(folder: Path, name: str, data: bytes) -> SavedUpload:
    """Save ``data`` in ``folder`` under the first of ``_candidates`` that is free or holds these bytes already:
    a file already there is never replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    # Only the base name, made filesystem-safe (no leading dot: not "..", not hidden): it must not pick the folder.
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", Path(name).name).lstrip(".") or "upload"
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".upload-", delete=False) as tmp:
        tmp.write(data)
    try:
        return next(saved for candidate in _candidates(folder, safe, data)
                    if (saved := _claim(tmp.name, candidate, data, safe)) is not None)
    finally:
        os.unlink(tmp.name)


def save_checkpoint(home: str | Path, file: Any) -> SavedUpload:
    """Keep an uploaded checkpoint in the workspace's uploads folder (see ``save_upload``: nothing is replaced)."""
    return save_upload(uploads_dir(home), file.name, file.getvalue())


# ---------------------------------------------------------------- the run catalog: tags, notes, archive, delete
def set_tags(home: str | Path, kind: str, targets: list[str], add: list[str], remove: list[str]) -> None:
    """Add and remove tags on every run (kind "run") or group ("group") of ``targets``; CatalogError names a bad
    tag or an unknown target before anything of that target is written."""
    setter = catalog.set_tags if kind == "run" else catalog.set_group_tags
    with _writer(home) as store:
        for target in targets:
            setter(store, target, add=add, remove=remove)


def save_note(home: str | Path, kind: str, target: str, text: str, read_as: str | None = None) -> None:
    """Save a note unless it changed since it was ``read_as`` (catalog.NoteConflict then)."""
    with _writer(home) as store:
        catalog.set_note(store, kind, target, text, read_as)


def note_of(home: str | Path, kind: str, target: str) -> str:
    """The stored note, read fresh (not through the page's caches): what a conflicting save is compared with."""
    with closing(Store(Path(home), readonly=True)) as store:
        return catalog.note_of(store, kind, target)


def set_archived(home: str | Path, run_ids: list[str], archived: bool) -> None:
    action = catalog.archive if archived else catalog.restore
    with _writer(home) as store:
        for run_id in run_ids:
            action(store, run_id)


DELETE_WAIT_S = 5.0  # a click waits this long for an active run's worker to let go; then the page says so


def delete_runs(home: str | Path, run_ids: list[str]) -> tuple[list[str], list[str]]:
    """Delete each run (cancelled first when active; those that depend on others of the selection first);
    returns (deleted ids, one message per refusal)."""
    with closing(Store(Path(home), readonly=True)) as store:
        ordered = catalog.deletion_order(store, run_ids)
    deleted, refusals = [], []
    for run_id in ordered:
        try:
            catalog.delete_run(Path(home), run_id, wait_s=DELETE_WAIT_S)
        except WorkspaceError as err:
            refusals.append(str(err))
        else:
            deleted.append(run_id)
    return deleted, refusals
