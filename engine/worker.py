"""The background worker: claims queued runs, executes them, records how they ended.

Start one per GPU (``python -m engine worker --gpu N``) or one on the CPU. A heartbeat
thread stamps the worker and its current run every few seconds; any worker that finds a
running run whose heartbeat stopped (its worker was killed) puts it back in the queue to
resume from its last checkpoint, or fails it after MAX_ATTEMPTS.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

from engine.jobs import execute_job
from engine.runner import execute_run
from engine.spec import SpecError, spec_from_yaml
from engine.store import STALE_AFTER_SECONDS, RunRow, Store, init_workspace
from engine.reporting import StoreReporter
from engine.runtime import NonFiniteLoss, RunCancelled, RunInterrupted, resolve_device

HEARTBEAT_SECONDS = 2.0
MAX_ATTEMPTS = 3

log = logging.getLogger("pathscope.worker")


class Heartbeat(threading.Thread):
    """Keeps the worker's and its current run's heartbeat fresh, even during a long step."""

    def __init__(self, home: Path, worker_id: str) -> None:
        super().__init__(daemon=True, name="heartbeat")
        self.store = Store(home)
        self.worker_id = worker_id
        self.current_run: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(HEARTBEAT_SECONDS):
            try:
                self.store.worker_heartbeat(self.worker_id, self.current_run)
            except Exception:  # a locked database must not kill the heartbeat; try again next beat
                log.exception("heartbeat failed")

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=HEARTBEAT_SECONDS * 2)
        self.store.close()


def execute_claimed(store: Store, run: RunRow, stop_event: threading.Event,
                    on_progress: Callable[[float, str], None] | None = None) -> dict[str, Any] | None:
    """Execute a run this process has claimed and record its final state. Returns the result when done."""
    reporter = StoreReporter(store, run.id, stop_event, on_progress)
    try:
        spec = spec_from_yaml(run.spec_yaml)
        result = execute_run(spec, run.id, store.home, reporter)
    except RunCancelled:
        reporter.flush()
        store.finish_run(run.id, "cancelled", error="cancelled by the user; the last epoch checkpoint is kept")
        store.add_event(run.id, "info", "cancelled")
    except RunInterrupted:
        reporter.flush()
        store.requeue_run(run.id, "worker stopped; the run will resume from its last checkpoint")
    except NonFiniteLoss as err:
        _fail(store, reporter, run.id, str(err), {"step": err.step, "term": err.term, "phase": err.phase})
    except Exception as err:  # noqa: BLE001 - a worker must survive any run
        # Bad input that got past validation (a dataset folder deleted meanwhile, a bad checkpoint)
        # carries its own clear message; anything else is named by its type.
        message = str(err) if isinstance(err, (SpecError, ValueError, OSError)) else f"{type(err).__name__}: {err}"
        _fail(store, reporter, run.id, message, {"traceback": traceback.format_exc()})
    else:
        reporter.flush()
        store.finish_run(run.id, "done", result=result)
        store.add_event(run.id, "info", f"done: test accuracy {result['test_acc']:.4f}")
        return result
    return None


def _fail(store: Store, reporter: StoreReporter, run_id: str, message: str, data: dict[str, Any]) -> None:
    reporter.flush()
    store.finish_run(run_id, "failed", error=message)
    store.add_event(run_id, "error", message, data)


def serve(home: Path, once: bool = False, poll_seconds: float = 1.0,
          stale_after: float = STALE_AFTER_SECONDS) -> None:
    """Claim and execute jobs and runs until stopped (or, with once, until both queues are empty).

    A worker busy training takes new jobs only after that run; start a second worker to serve
    jobs (attribution maps) while a long run trains.
    """
    home = init_workspace(home)
    store = Store(home)
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    store.register_worker(worker_id, str(resolve_device("auto")))
    stop_event = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_event.set())
    heartbeat = Heartbeat(home, worker_id)
    heartbeat.start()
    log.info("worker %s serving %s", worker_id, home)
    try:
        while not stop_event.is_set():
            for run_id, outcome in store.reclaim_stale_runs(stale_after, MAX_ATTEMPTS):
                log.warning("run %s had a dead worker: %s", run_id, outcome)
            store.requeue_orphaned_jobs(w["id"] for w in store.live_workers(stale_after))
            job = store.claim_job(worker_id)
            if job is not None:  # jobs are short (an attribution map): they go before the next run
                log.info("job %s (%s) on run %s", job.id, job.kind, job.run_id)
                execute_job(store, job)
                continue
            run = store.claim_run(worker_id)
            if run is None:
                if once:
                    break
                stop_event.wait(poll_seconds)
                continue
            heartbeat.current_run = run.id
            log.info("running %s (%s)", run.id, run.name)
            execute_claimed(store, run, stop_event)
            heartbeat.current_run = None
    finally:
        heartbeat.stop()
        store.stop_worker(worker_id)
        store.close()
