"""The workspace's folder layout (runs, teachers, caches) and atomic file writes, in a neutral home.

engine/store.py owns the database (pathscope.db); this module only says where files go, so modules that
read or write a run's files need neither the store nor the training loop.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


def save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
