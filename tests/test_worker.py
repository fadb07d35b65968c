"""Background worker: a queued run is trained, cancel stops it, SIGKILL is recovered from."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.spec import parse_spec, spec_to_yaml
from engine.store import Store, run_dir
from tests.conftest import ROOT, tiny_spec_dict


def _start_worker(home: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", "worker", *extra], cwd=ROOT,
                            env={**os.environ, "PATHSCOPE_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _submit(store: Store, **overrides) -> str:
    spec = parse_spec(tiny_spec_dict(**overrides))
    return store.create_run(spec_to_yaml(spec), spec.name)


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)


def test_worker_trains_a_queued_run_and_exits_when_asked(home: Path) -> None:
    store = Store(home)
    run_id = _submit(store)
    worker = _start_worker(home, "--once")
    assert worker.wait(timeout=240) == 0
    run = store.get_run(run_id)
    assert run.status == "done", run.error
    assert run.result["test_acc"] > 0.5
    assert run.progress == 1.0
    losses = store.metrics(run_id, keys=["loss/path:t-kd"], phase="main")
    assert len(losses) > 5


def test_cancel_stops_a_running_run_within_seconds(home: Path) -> None:
    store = Store(home)
    run_id = _submit(store, epochs=200)
    worker = _start_worker(home)
    try:
        _wait_for(lambda: store.get_run(run_id).phase == "main" and store.get_run(run_id).progress > 0.01,
                  180, "the run to start training")
        asked = time.monotonic()
        store.request_cancel(run_id)
        _wait_for(lambda: store.get_run(run_id).status == "cancelled", 10, "the cancel to take effect")
        assert time.monotonic() - asked < 10
        assert worker.poll() is None, "the worker must survive a cancelled run"
    finally:
        _stop(worker)


def test_sigkilled_worker_run_is_resumed_from_its_checkpoint(home: Path) -> None:
    store = Store(home)
    run_id = _submit(store, epochs=40)
    checkpoints = run_dir(home, run_id) / "checkpoints"
    worker = _start_worker(home, "--stale-after", "3")
    _wait_for(lambda: (checkpoints / "epoch_001.pt").exists(), 180, "two epoch checkpoints")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert store.get_run(run_id).status == "running"  # nobody has noticed yet
    rescuer = _start_worker(home, "--stale-after", "3")
    try:
        _wait_for(lambda: store.get_run(run_id).status in ("done", "failed"), 240, "the rescued run to finish")
    finally:
        _stop(rescuer)
    run = store.get_run(run_id)
    assert run.status == "done", run.error
    assert run.attempts == 2
    messages = [e["message"] for e in store.events(run_id)]
    assert any("stopped responding" in m for m in messages)
    assert any(m.startswith("resumed main from the checkpoint of epoch") for m in messages)
    steps = [r["step"] for r in store.metrics(run_id, keys=["loss/total"], phase="main")]
    assert len(steps) == len(set(steps)), "resumed series must not log a step twice"


def test_a_starting_worker_waits_out_a_locked_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A process paused mid-write holds the write lock past the busy timeout: a new worker waits, not exits."""
    import sqlite3

    from engine import worker

    calls: list[Path] = []

    def locked_once(home: Path) -> Path:
        calls.append(home)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return home

    monkeypatch.setattr(worker, "init_workspace", locked_once)
    monkeypatch.setattr(worker.time, "sleep", lambda _seconds: None)
    with caplog.at_level("WARNING", logger="pathscope.worker"):
        assert worker._open_workspace(tmp_path) == tmp_path
    assert len(calls) == 2 and "the store is busy (database is locked)" in caplog.text
