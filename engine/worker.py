"""The background worker: claims queued runs, executes them, records how they ended.

Start one per GPU (``python -m engine worker --gpu N``) or one on the CPU. A heartbeat
thread stamps the worker and its current run every few seconds; any worker that finds a
running run whose heartbeat stopped (its worker was killed) puts it back in the queue to
resume from its last checkpoint, or fails it after MAX_ATTEMPTS.

Each claim carries an attempt token and every write of the run holds only while that token is current
(fencing): a worker paused past the grace (SIGSTOP, a debugger) and reclaimed stops at its next write.
A worker stopped on purpose (SIGTERM, Ctrl-C) hands its run back without spending an attempt.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sqlite3
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from engine.distributed.launch import run_distributed
from engine.jobs import execute_job
from engine.runner import execute_run
from engine.spec import SpecError, spec_from_yaml
from engine.store import STALE_AFTER_SECONDS, RunRow, Store, init_workspace
from engine.reporting import StoreReporter
from engine.runtime import LostClaim, NonFiniteLoss, RunCancelled, RunInterrupted, resolve_device
from engine.workspace import fenced_files

HEARTBEAT_SECONDS = 2.0
MAX_ATTEMPTS = 3

log = logging.getLogger("pathscope.worker")


class Heartbeat(threading.Thread):
    """Keeps the worker's and its current runs' heartbeats fresh, even during a long step.

    ``runs`` maps each run it beats for to the attempt token it holds: a reclaimed attempt's beats no longer touch
    the run. A worker holds one run at a time (``follow``); a Ray driver holds every run of its sweep
    (``hold`` / ``drop``).
    """

    def __init__(self, home: Path, worker_id: str) -> None:
        super().__init__(daemon=True, name="heartbeat")
        self.store = Store(home)
        self.worker_id = worker_id
        self.runs: dict[str, str | None] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(HEARTBEAT_SECONDS):
            try:
                self.store.heartbeat_runs(self.worker_id, dict(self.runs))
            except Exception:  # a locked database must not kill the heartbeat; try again next beat
                log.exception("heartbeat failed")

    def follow(self, run: RunRow | None) -> None:
        """Beat for this claimed run only from now on (None: for no run)."""
        self.runs = {run.id: run.attempt_token} if run else {}

    def hold(self, run_id: str, token: str | None) -> None:
        """Beat for this run (too), under this attempt token."""
        self.runs = {**self.runs, run_id: token}

    def drop(self, run_id: str) -> None:
        self.runs = {k: v for k, v in self.runs.items() if k != run_id}

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=HEARTBEAT_SECONDS * 2)
        self.store.close()


def execute_claimed(store: Store, run: RunRow, stop_event: threading.Event,
                    on_progress: Callable[[float, str], None] | None = None,
                    stopped_status: str = "queued") -> dict[str, Any] | None:
    """Execute a run this process has claimed and record its final state. Returns the result when done.

    A run stopped on purpose (``stop_event``, Ctrl-C) becomes ``stopped_status`` without spending an attempt:
    'queued' for a worker handing it back, 'interrupted' for a foreground run. A reclaimed attempt (LostClaim)
    records nothing: the run is its new owner's.
    """
    reporter = StoreReporter(store, run.id, stop_event, on_progress, token=run.attempt_token)
    token = run.attempt_token
    try:
        spec = spec_from_yaml(run.spec_yaml)
        store.set_placement(run.id, local_placement(spec.device), token=token)
        with fenced_files(reporter.file_fence()):
            if spec.distributed.nproc > 1:  # its rank 0 writes the run's rows under this claim's token
                result = run_distributed(spec, run.id, store.home, token, stop=stop_event)
            else:
                result = execute_run(spec, run.id, store.home, reporter)
    except LostClaim:
        log.warning("run %s was reclaimed while this worker was paused; it stops here and writes nothing", run.id)
    except (RunInterrupted, KeyboardInterrupt):
        record_writes(run.id, reporter.flush, lambda: store.release_run(
            run.id, token, stopped_status, _stopped_reason(stopped_status, run.id)))
    except RunCancelled:
        record_writes(run.id, reporter.flush, lambda: store.finish_run(
            run.id, "cancelled", error="cancelled by the user; the last epoch checkpoint is kept", token=token),
                      lambda: store.add_event(run.id, "info", "cancelled", token=token))
    except NonFiniteLoss as err:
        _fail(store, reporter, run.id, str(err), {"step": err.step, "term": err.term, "phase": err.phase})
    except Exception as err:  # noqa: BLE001 - a worker must survive any run
        _fail(store, reporter, run.id, failure_message(err, run.id), {"traceback": traceback.format_exc()})
    else:
        if record_writes(run.id, reporter.flush,
                         lambda: store.finish_run(run.id, "done", result=result, token=token)):
            record_writes(run.id, lambda: store.add_event(
                run.id, "info", f"done: test accuracy {result['test_acc']:.4f}", token=token))
            return result
    return None


def local_placement(device: str) -> dict[str, Any]:
    """Where a run this process executes runs (RunRow.placement): this host, this process, its device."""
    try:
        devices = str(resolve_device(device))
    except RuntimeError:  # CUDA asked for but absent: execute_run fails it with that message
        devices = device
    return {"executor": "local", "node": socket.gethostname(), "devices": devices, "pid": os.getpid()}


def _stopped_reason(status: str, run_id: str) -> str:
    """The event of a run stopped on purpose, by the state it is left in."""
    if status == "queued":
        return "the worker was stopped; the run went back to the queue and resumes from its last checkpoint"
    return (f"interrupted (Ctrl-C or SIGTERM) with its last checkpoint kept; python -m engine resume {run_id} "
            f"continues it")


#: errors of a full disk or a file size limit: the message says how to recover
_NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def failure_message(err: Exception, run_id: str) -> str:
    """One line for a run's error: bad input past validation (a dataset deleted meanwhile, a bad checkpoint)
    carries its own clear message, a full disk says how to go on, anything else is named by its type."""
    if isinstance(err, OSError) and err.errno in _NO_SPACE:
        return (f"no space left writing {err.filename or 'a file'} ({err.strerror}); free some space, then "
                f"python -m engine resume {run_id} continues from the last checkpoint")
    if isinstance(err, (SpecError, ValueError, OSError)):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _fail(store: Store, reporter: StoreReporter, run_id: str, message: str, data: dict[str, Any]) -> None:
    """Record the failure first, in one small write that needs no file space; the details follow if they fit.

    Buffered metrics are dropped rather than flushed: the disk may just have filled, and a resume re-logs
    everything after the last checkpoint anyway.
    """
    reporter.drop_unflushed()
    record_writes(run_id, lambda: store.finish_run(run_id, "failed", error=message, token=reporter.token),
                  lambda: store.add_event(run_id, "error", message, data, token=reporter.token))


def record_writes(run_id: str, *writes: Callable[[], None]) -> bool:
    """Perform a run's closing writes in order, stopping at the first that fails with a single log line (never a
    chained traceback): a lost claim means another attempt owns the run; a database that cannot be written
    leaves the run `running` until its heartbeat goes stale and it is resumed. True when all were written."""
    for write in writes:
        try:
            write()
        except LostClaim:
            log.warning("run %s was reclaimed by another attempt; its end is that attempt's to record", run_id)
            return False
        except (sqlite3.Error, OSError) as err:
            log.error("run %s: could not record how it ended (%s); it will be resumed once its heartbeat "
                      "goes stale", run_id, err)
            return False
    return True


class SleepWatch:
    """Tells whether this machine was just suspended (a laptop's lid closed).

    On waking, every process resumes at once and the other workers' heartbeats look as old as the sleep: a
    worker must not reclaim their runs until they have had a few beats to catch up. Linux's monotonic clock
    stops while suspended and the wall clock does not, so their drift measures the sleep (a process merely
    paused, such as one under SIGSTOP, moves both).
    """

    def __init__(self) -> None:
        self._drift = self._now_drift()
        self._quiet_until = 0.0

    @staticmethod
    def _now_drift() -> float:
        return time.time() - time.monotonic()

    def may_reclaim(self) -> bool:
        drift = self._now_drift()
        if drift - self._drift > HEARTBEAT_SECONDS:
            self._quiet_until = time.monotonic() + 3 * HEARTBEAT_SECONDS
        self._drift = drift
        return time.monotonic() >= self._quiet_until


def serve(home: Path, once: bool = False, poll_seconds: float = 1.0,
          stale_after: float = STALE_AFTER_SECONDS) -> None:
    """Claim and execute jobs and runs until stopped (or, with once, until both queues are empty).

    A worker busy training takes new jobs only after that run; start a second worker to serve
    jobs (attribution maps) while a long run trains.
    """
    home = _open_workspace(home)
    store = Store(home)
    worker_id = f"{socket.gethostname()}-{os.getpid()}"
    store.register_worker(worker_id, str(resolve_device("auto")))
    stop_event = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_event.set())
    heartbeat = Heartbeat(home, worker_id)
    heartbeat.start()
    sleep_watch = SleepWatch()
    log.info("worker %s serving %s", worker_id, home)
    try:
        while not stop_event.is_set():
            try:
                if not _serve_next(store, worker_id, heartbeat, sleep_watch, stop_event, stale_after):
                    if once:
                        break
                    stop_event.wait(poll_seconds)
            except sqlite3.OperationalError as err:
                # Locked past the busy timeout (another process paused inside a write, say): not this worker's
                # fault, so it waits and tries again rather than exiting.
                log.warning("the store is busy (%s); trying again", err)
                stop_event.wait(poll_seconds)
    finally:
        heartbeat.stop()
        # A run still held here means an error escaped the loop: hand it back at once. The attempt is refunded
        # only when the worker was asked to stop; an error counts, so a run that keeps failing ends failed.
        store.release_worker_runs(worker_id, f"worker {worker_id} stopped; the run went back to the queue",
                                  refund=stop_event.is_set())
        store.stop_worker(worker_id)
        store.close()


def _open_workspace(home: Path) -> Path:
    """init_workspace, waiting out a process that holds the database's write lock (one paused mid-write) rather
    than exiting: the worker starts once the lock is free. SIGTERM still ends it at once."""
    while True:
        try:
            return init_workspace(home)
        except sqlite3.OperationalError as err:
            log.warning("the store is busy (%s); trying again", err)
            time.sleep(1.0)


def _serve_next(store: Store, worker_id: str, heartbeat: Heartbeat, sleep_watch: SleepWatch,
                stop_event: threading.Event, stale_after: float) -> bool:
    """Reclaim what dead workers left, then execute one job or one run; False when both queues were empty."""
    if sleep_watch.may_reclaim():
        _reclaim(store, stale_after)
    job = store.claim_job(worker_id)
    if job is not None:  # jobs are short (an attribution map): they go before the next run
        log.info("job %s (%s) on run %s", job.id, job.kind, job.run_id)
        execute_job(store, job)
        return True
    run = store.claim_run(worker_id)
    if run is None:
        return False
    heartbeat.follow(run)
    log.info("running %s (%s)", run.id, run.name)
    try:
        execute_claimed(store, run, stop_event)
    finally:
        heartbeat.follow(None)
    return True


def _reclaim(store: Store, stale_after: float) -> None:
    """Requeue (or give up on) runs and jobs whose worker stopped beating."""
    for run_id, outcome in store.reclaim_stale_runs(stale_after, MAX_ATTEMPTS):
        log.warning("run %s had a dead worker: %s", run_id, outcome)
    store.requeue_orphaned_jobs(w["id"] for w in store.live_workers(stale_after))
