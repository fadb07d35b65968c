"""Start a background worker when none is alive, so "Launch" just works on a laptop.

The worker is a separate process (``python -m engine worker``) in its own session, so it
keeps training when the Streamlit script thread reruns or the server restarts.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from engine.store import Store

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER_MAX_AGE_S = 10.0
# A just-spawned worker needs a few seconds (torch import) before its first heartbeat;
# without this grace a second click would spawn a second worker.
STARTUP_GRACE_S = 60.0

_spawned: dict[Path, tuple[subprocess.Popen, float]] = {}


def autostart_disabled() -> bool:
    return os.environ.get("PATHSCOPE_NO_AUTOWORKER") == "1"


def _starting(home: Path) -> bool:
    entry = _spawned.get(home)
    if entry is None:
        return False
    proc, started = entry
    return proc.poll() is None and time.time() - started < STARTUP_GRACE_S


def live_worker_count(home: Path) -> int:
    with closing(Store(home, readonly=True)) as store:
        return len(store.live_workers(max_age_s=WORKER_MAX_AGE_S))


def ensure_worker(home: Path) -> int | None:
    """Spawn a worker for ``home`` unless one is alive or starting; return the new pid, if any."""
    home = Path(home).resolve()
    if autostart_disabled() or _starting(home) or live_worker_count(home) > 0:
        return None
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"worker-{time.strftime('%Y%m%d-%H%M%S')}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "worker"],
            cwd=REPO_ROOT,
            env={**os.environ, "PATHSCOPE_HOME": str(home)},
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _spawned[home] = (proc, time.time())
    return proc.pid
