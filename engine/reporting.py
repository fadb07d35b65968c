"""Reporters: how a run's metrics, events, progress and stop requests reach the store."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from engine.store import Store
from engine.telemetry import Recorded
from engine.runtime import RunCancelled, RunInterrupted
from engine.workspace import FileFence

FLUSH_ROWS = 500
FLUSH_SECONDS = 1.0
POLL_SECONDS = 0.5


class StoreReporter:
    """Writes metrics in batches so the dashboard's reads never wait on per-step commits.

    Given the attempt token of the claim it executes under, every write holds only while that claim does: a
    reclaimed attempt gets engine.runtime.LostClaim at its next write and stops.
    """

    def __init__(self, store: Store, run_id: str, stop_event: threading.Event | None = None,
                 on_progress: Callable[[float, str], None] | None = None, token: str | None = None) -> None:
        self.store = store
        self.run_id = run_id
        self.token = token
        self.stop_event = stop_event or threading.Event()
        self.on_progress = on_progress
        self._rows: list[tuple[str, int, int, str, float]] = []
        self._arrays: list[tuple[str, int, int, str, Recorded]] = []
        self._last_flush = self._last_progress = self._last_poll = 0.0

    def log(self, phase: str, step: int, epoch: int, values: dict[str, float]) -> None:
        self._rows += [(phase, step, epoch, key, float(value)) for key, value in values.items()]
        if len(self._rows) >= FLUSH_ROWS or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def log_array(self, phase: str, step: int, epoch: int, key: str, recorded: Recorded) -> None:
        self._arrays.append((phase, step, epoch, key, recorded))

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        arrays, self._arrays = self._arrays, []
        self.store.add_metrics(self.run_id, rows, token=self.token)
        self.store.add_arrays(self.run_id, arrays, token=self.token)
        self._last_flush = time.monotonic()

    def drop_unflushed(self) -> None:
        """Forget what is buffered: after a failure nothing more is written (a resume re-logs it anyway)."""
        self._rows, self._arrays = [], []

    def event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.store.add_event(self.run_id, level, message, data, token=self.token)

    def progress(self, fraction: float, phase: str) -> None:
        if self.on_progress:
            self.on_progress(fraction, phase)
        if fraction >= 1.0 or time.monotonic() - self._last_progress > POLL_SECONDS:
            self.store.update_progress(self.run_id, min(fraction, 1.0), phase, token=self.token)
            self._last_progress = time.monotonic()

    def check_stop(self) -> None:
        if self.stop_event.is_set():
            raise RunInterrupted("the process is stopping")
        if time.monotonic() - self._last_poll < POLL_SECONDS:
            return
        self._last_poll = time.monotonic()
        if self.store.cancel_requested(self.run_id):
            raise RunCancelled("cancelled by the user")

    def truncate(self, phase: str, epoch: int) -> None:
        self.flush()
        self.store.delete_metrics_after(self.run_id, phase, epoch, token=self.token)

    def file_fence(self) -> FileFence | None:
        """The fence for the run's files (engine.workspace.save_atomic), when this reporter holds a claim."""
        if self.token is None:
            return None
        return FileFence(self.token, lambda rename: self.store.while_holding(self.run_id, self.token, rename))
