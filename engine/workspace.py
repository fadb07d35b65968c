"""The workspace's folder layout (runs, teachers, caches) and atomic file writes, in a neutral home.

engine/store.py owns the database (pathscope.db); this module only says where files go, so modules that
read or write a run's files need neither the store nor the training loop.
"""
from __future__ import annotations

import io
import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch


def workspace_home() -> Path:
    return Path(os.environ.get("PATHSCOPE_HOME", "workspace")).resolve()


def run_dir(home: Path, run_id: str) -> Path:
    return home / "runs" / run_id


def cache_dir(home: Path) -> Path:
    """Teachers' cached outputs and test accuracies, decoded image folders."""
    return home / "cache"


def teacher_file(home: Path, arch: str, digest: str) -> Path:
    """An inline teacher trained by a run, kept under the digest of its recipe (see runner.teacher_cache_path)."""
    return home / "teachers" / f"{arch}-{digest}.pt"


def run_final_checkpoint(home: Path | None, run_id: str) -> Path:
    """The final model of a finished run of the workspace (a teacher's or a student's source: run)."""
    if home is None:
        raise ValueError(f"source.run_id: run {run_id} needs a workspace to be read from")
    return run_dir(home, run_id) / "checkpoints" / "final.pt"


@dataclass(frozen=True)
class FileFence:
    """How the attempt executing a run swaps its files in: ``tag`` names its temporary files (two attempts of one
    run never write the same one) and ``commit`` performs a rename only while the attempt still owns the run."""

    tag: str
    commit: Callable[[Callable[[], None]], None]


# The attempt this process is executing, set by the worker around a run (engine.worker.execute_claimed): every file
# the run saves (checkpoints, its final model, the inline teachers it caches) goes through it without the loop or
# the runner having to carry the store around.
_FENCE: ContextVar[FileFence | None] = ContextVar("file_fence", default=None)


@contextmanager
def fenced_files(fence: FileFence | None) -> Iterator[None]:
    """Within this block, save_atomic swaps files in under ``fence`` (None: unfenced, as outside any run)."""
    reset = _FENCE.set(fence)
    try:
        yield
    finally:
        _FENCE.reset(reset)


def save_atomic(obj: Any, path: Path) -> None:
    """Write to a temporary file and rename it over ``path``: readers see the old file or the new one, whole.

    Under a fence the temporary name is the attempt's own and the rename waits on the claim (a reclaimed attempt
    raises engine.runtime.LostClaim instead); a failed write (a full disk) leaves no temporary file behind.
    """
    fence = _FENCE.get()
    tmp = path.with_name(f"{path.name}.{fence.tag if fence else os.getpid()}.tmp")
    # Serialised in memory first: torch.save writing to a file reports a full disk as a RuntimeError without an
    # errno, a plain write raises OSError(ENOSPC) that names the file.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    try:
        try:
            with open(tmp, "wb") as out:
                out.write(buffer.getbuffer())
                out.flush()
                os.fsync(out.fileno())  # the rename must never publish a file whose bytes are not on disk yet
        except OSError as err:  # a write error names no file: say which one could not be saved
            raise OSError(err.errno, err.strerror, str(path)) from None
        if fence is None:
            os.replace(tmp, path)
        else:
            fence.commit(lambda: os.replace(tmp, path))
    finally:
        tmp.unlink(missing_ok=True)
