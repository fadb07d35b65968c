"""Reporters: how a run's metrics, events, progress and stop requests reach the store."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from engine.store import Store
from engine.telemetry import Recorded
from engine.runtime import RunCancelled, RunInterrupted

FLUSH_ROWS = 500
FLUSH_SECONDS = 1.0
POLL_SECONDS = 0.5


class StoreReporter:
    """Writes metrics in batches so the dashboard's reads never wait on per-step commits."""

    def __init__(self, store: Store, run_id: str, stop_event: threading.Event | None = None,
                 on_progress: Callable[[float, str], None] | None = None) -> None:
        self.store = store
        self.run_id = run_id
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
        self.store.add_metrics(self.run_id, rows)
        self.store.add_arrays(self.run_id, arrays)
        self._last_flush = time.monotonic()

    def event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self.store.add_event(self.run_id, level, message, data)

    def progress(self, fraction: float, phase: str) -> None:
        if self.on_progress:
            self.on_progress(fraction, phase)
        if fraction >= 1.0 or time.monotonic() - self._last_progress > POLL_SECONDS:
            self.store.update_progress(self.run_id, min(fraction, 1.0), phase)
            self._last_progress = time.monotonic()

    def check_stop(self) -> None:
        if self.stop_event.is_set():
            raise RunInterrupted("the worker is shutting down")
        if time.monotonic() - self._last_poll < POLL_SECONDS:
            return
        self._last_poll = time.monotonic()
        if self.store.cancel_requested(self.run_id):
            raise RunCancelled("cancelled by the user")

    def truncate(self, phase: str, epoch: int) -> None:
        self.flush()
        self.store.delete_metrics_after(self.run_id, phase, epoch)
