"""Attribution artifacts: one .npz per (checkpoint, model, method, params, sample) under runs/<id>/explain/.

The file name is a hash of everything that determines the map, so a repeated request finds it
and nothing is recomputed. Entry arrays: map (C, H, W) float32, image (C, H, W) float32 in
[0, 1], probs (K,) float32, and the scalars label, target, predicted, confidence.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.workspace import run_dir

#: bump when what a map means changes (a method's definition, the entry layout), so old files are not served
CACHE_VERSION = 1
FOLDER = "explain"


def entry_key(parts: dict[str, Any]) -> str:
    """A stable name for a request: the hash of its canonical JSON."""
    text = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def explain_dir(home: Path, run_id: str) -> Path:
    return run_dir(home, run_id) / FOLDER


def relative_name(name: str) -> str:
    """How results name an artifact: relative to the run's folder, so a workspace can move."""
    return f"{FOLDER}/{name}"


def save_entry(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically: a reader (or a rerun of a job whose worker died) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)


def load_entry(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
