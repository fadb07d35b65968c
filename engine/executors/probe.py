"""Can this process write the storage folder? Imports nothing of PathScope beyond this package, so the probe task
Ray runs on every node starts fast (the storage check of engine/executors/ray_cluster.py)."""
from __future__ import annotations

import os
import socket
from pathlib import Path


def write_problem(storage: str) -> str | None:
    """Create the folder and write a file in it; None when that works, else why not."""
    try:
        Path(storage).mkdir(parents=True, exist_ok=True)
        probe = Path(storage) / f".write-probe-{socket.gethostname()}-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        return err.strerror or str(err)
    return None
