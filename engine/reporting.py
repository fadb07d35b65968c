"""Reporters: how a run's metrics, events, progress and stop requests reach the store."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np

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


#: A report from a process that may not open the database (a Ray trial): ``ops`` in the order they happened, each
#: a small list of plain values (never tensors) that ``apply_ops`` writes in the process that owns the store:
#:   ["metrics", [[phase, step, epoch, key, value], ...]]     ["event", level, message, data]
#:   ["array", phase, step, epoch, key, {values, dtype, shape, index, columns}]
#:   ["progress", fraction, phase]      ["truncate", phase, epoch]      ["placement", {...}]
Op = list[Any]


class OpsReporter:
    """A Reporter that batches what a run reports into ops and hands them to ``send`` (ray.tune.report in a trial):
    at most one send per FLUSH_SECONDS, and at every flush the training loop asks for (before a checkpoint).

    Stop requests come from outside (the driver stops the trial), so ``check_stop`` only keeps reports flowing.
    """

    def __init__(self, send: Callable[[list[Op]], None]) -> None:
        self.send = send
        self._ops: list[Op] = []
        self._rows: list[list[Any]] = []
        self._progress: Op | None = None  # only the latest progress is worth sending
        self._last_flush = time.monotonic()

    def log(self, phase: str, step: int, epoch: int, values: dict[str, float]) -> None:
        self._rows += [[phase, step, epoch, key, float(value)] for key, value in values.items()]
        self._maybe_flush()

    def log_array(self, phase: str, step: int, epoch: int, key: str, recorded: Recorded) -> None:
        self._close_rows()
        self._ops.append(["array", phase, step, epoch, key, array_payload(recorded)])

    def event(self, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        self._close_rows()
        self._ops.append(["event", level, message, data])
        self._maybe_flush()

    def progress(self, fraction: float, phase: str) -> None:
        self._progress = ["progress", min(float(fraction), 1.0), phase]
        self._maybe_flush()

    def check_stop(self) -> None:
        self._maybe_flush()

    def truncate(self, phase: str, epoch: int) -> None:
        self._close_rows()
        self._ops.append(["truncate", phase, epoch])
        self.flush()

    def place(self, placement: dict[str, Any]) -> None:
        self._ops.append(["placement", placement])

    def flush(self) -> None:
        self._close_rows()
        ops = self._ops + ([self._progress] if self._progress else [])
        self._ops, self._progress = [], None
        self._last_flush = time.monotonic()
        if ops:
            self.send(ops)

    def _close_rows(self) -> None:
        """Metric rows buffered so far become one op, so they keep their order with the ops after them."""
        if self._rows:
            self._ops.append(["metrics", self._rows])
            self._rows = []

    def _maybe_flush(self) -> None:
        if len(self._rows) >= FLUSH_ROWS or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()


def array_payload(recorded: Recorded) -> dict[str, Any]:
    """A recorded array as plain lists (what a Ray report may carry)."""
    values = np.asarray(recorded.values)
    return {"values": values.ravel().tolist(), "dtype": str(values.dtype), "shape": list(values.shape),
            "index": np.asarray(recorded.index, dtype=np.int64).tolist(), "columns": recorded.columns}


def recorded_from_payload(payload: dict[str, Any]) -> Recorded:
    values = np.asarray(payload["values"], dtype=payload["dtype"]).reshape(payload["shape"])
    return Recorded(values, np.asarray(payload["index"], dtype=np.int64), payload["columns"])


def apply_ops(store: Store, run_id: str, ops: list[Op], token: str | None) -> None:
    """Write a batch of ops to the store in order, each write under the run's attempt token (fencing)."""
    for op in ops:
        kind, args = op[0], op[1:]
        if kind == "metrics":
            store.add_metrics(run_id, [tuple(row) for row in args[0]], token=token)
        elif kind == "array":
            phase, step, epoch, key, payload = args
            store.add_arrays(run_id, [(phase, step, epoch, key, recorded_from_payload(payload))], token=token)
        elif kind == "event":
            store.add_event(run_id, *args, token=token)
        elif kind == "progress":
            store.update_progress(run_id, args[0], args[1], token=token)
        elif kind == "truncate":
            store.delete_metrics_after(run_id, args[0], args[1], token=token)
        elif kind == "placement":
            store.set_placement(run_id, args[0], token=token)
        else:
            raise ValueError(f"unknown report op {kind!r} for run {run_id}")
