"""Faults with real processes on small digits runs: a worker paused past its grace (SIGSTOP), workers killed at
seeded random points (SIGKILL), a full disk (a file size limit), Ctrl-C of a foreground run, and two workers with
a polling reader. Each run must end `done` exactly once, without a duplicated metric row, with a student bit for
bit equal to an uninterrupted run's; the store must stay readable and never report "database is locked".

All slow (each trains one to three runs of a few seconds, and waits out a 3 s grace): ``pytest -m "not slow"``
leaves them out.
"""
from __future__ import annotations

import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

from engine.spec import parse_spec, spec_to_yaml
from engine.store import Store, db_path, run_dir
from tests.conftest import ROOT, engine_cli, tiny_spec_dict

pytestmark = pytest.mark.slow

#: long enough to pause or kill a worker mid-run (about 0.7 s an epoch on 2 CPU cores), short enough to repeat
EPOCHS = 12
GRACE = "3"  # seconds without a heartbeat before a run is reclaimed (the default, 60 s, is for real machines)
DEADLINE = 240.0


def _spec(**overrides) -> dict:
    return tiny_spec_dict(epochs=EPOCHS, **overrides)


def _submit(store: Store, spec: dict) -> str:
    parsed = parse_spec(spec)
    return store.create_run(spec_to_yaml(parsed), parsed.name)


def _worker(home: Path, log: Path, *extra: str, preexec: Callable[[], None] | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "engine", "worker", "--stale-after", GRACE, *extra],
                                cwd=ROOT, env={**os.environ, "PATHSCOPE_HOME": str(home)}, stdout=out, stderr=out,
                                start_new_session=True, preexec_fn=preexec)


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _end(*workers: subprocess.Popen) -> None:
    for worker in workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGCONT)  # a paused worker cannot act on SIGTERM
            os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=60)


def _duplicated_metric_rows(store: Store, run_id: str) -> int:
    return store.con.execute("SELECT COUNT(*) FROM (SELECT 1 FROM metrics WHERE run_id=? GROUP BY phase, step, key"
                             " HAVING COUNT(*) > 1)", (run_id,)).fetchone()[0]


def _student(home: Path, run_id: str) -> dict[str, torch.Tensor]:
    return torch.load(run_dir(home, run_id) / "checkpoints" / "final.pt", weights_only=True)["state_dict"]


def _assert_done_once_and_equal(store: Store, run_id: str, reference: dict[str, torch.Tensor]) -> None:
    run = store.get_run(run_id)
    assert run.status == "done", run.error
    assert [e["message"] for e in store.events(run_id)].count(f"done: test accuracy {run.result['test_acc']:.4f}") == 1
    assert _duplicated_metric_rows(store, run_id) == 0
    student = _student(store.home, run_id)
    assert student.keys() == reference.keys()
    assert all(torch.equal(student[k], reference[k]) for k in reference), "the student differs from an " \
                                                                           "uninterrupted run's"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The final student of the spec trained without interruption, by a worker as the fault tests' are."""
    home = tmp_path_factory.mktemp("reference") / "workspace"
    run_id = _submit(Store(home), _spec())
    worker = _worker(home, home / "worker.log", "--once")
    assert worker.wait(timeout=DEADLINE) == 0, (home / "worker.log").read_text()[-2000:]
    assert Store(home).get_run(run_id).status == "done"
    return _student(home, run_id)


def test_a_paused_worker_whose_run_was_reclaimed_stops_at_its_next_write(home: Path, reference) -> None:
    store = Store(home)
    run_id = _submit(store, _spec())
    first = _worker(home, home / "first.log")
    second = None
    try:
        _wait_for(lambda: (run_dir(home, run_id) / "checkpoints" / "epoch_001.pt").exists(), "two epochs")
        _pause_between_writes(first, home)  # a laptop asleep, a debugger: alive, but no heartbeat
        second = _worker(home, home / "second.log")
        _wait_for(lambda: store.get_run(run_id).attempts == 2, "the second worker to reclaim the run")
        os.killpg(first.pid, signal.SIGCONT)  # wakes mid-step while the second worker trains the run
        _wait_for(lambda: "reclaimed" in (home / "first.log").read_text(), "the paused worker to notice")
        _wait_for(lambda: store.get_run(run_id).status in ("done", "failed"), "the run to finish")
        assert first.poll() is None, "the paused worker must survive losing its run"
    finally:
        _end(first, *([second] if second else []))
    _assert_done_once_and_equal(store, run_id, reference)
    assert any(m.startswith("resumed main from the checkpoint") for m in (e["message"] for e in store.events(run_id)))


def _pause_between_writes(worker: subprocess.Popen, home: Path, tries: int = 100) -> None:
    """SIGSTOP ``worker`` at a moment it holds no write transaction. Paused inside one (a few milliseconds of every
    second), it would block every writer of the workspace, the second worker included, until it wakes: SQLite's
    rule, which no reclaim can get around, and not what this test is about."""
    for _ in range(tries):
        os.killpg(worker.pid, signal.SIGSTOP)
        con = sqlite3.connect(db_path(home), timeout=0.2)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
            return
        except sqlite3.OperationalError:  # paused mid-write: let it finish and try again
            os.killpg(worker.pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            con.close()
    raise AssertionError(f"the worker held a write transaction at each of {tries} pauses")


def _latest_step(store: Store, run_id: str) -> int:
    found = store.con.execute("SELECT MAX(step) FROM metrics WHERE run_id=? AND phase='main'", (run_id,)).fetchone()
    return found[0] or 0


def _run_until_step(worker: subprocess.Popen, store: Store, run_id: str, attempt: int, step: int,
                    slice_s: float = 0.05) -> None:
    """Let ``worker`` run in slices of ``slice_s`` and leave it paused once ``attempt`` has reached ``step``. A worker
    left running while this process polls can train past the step, or finish the run, whenever this process is kept
    off the CPU for a few seconds (as on a loaded CI machine); a paused worker cannot, so the kill lands within one
    slice of the step however slow this process is."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        os.killpg(worker.pid, signal.SIGCONT)
        time.sleep(slice_s)
        os.killpg(worker.pid, signal.SIGSTOP)
        if store.get_run(run_id).attempts == attempt and _latest_step(store, run_id) >= step:
            return
    raise AssertionError(f"timed out after {DEADLINE:.0f} s waiting for attempt {attempt} to reach step {step}")


def test_workers_killed_at_random_points_lose_and_repeat_nothing(home: Path, reference) -> None:
    store = Store(home)
    run_id = _submit(store, _spec())
    # Two kills (the third attempt is the last MAX_ATTEMPTS allows) at seeded steps of the 252 the main phase has,
    # far enough apart that the second attempt trains past its checkpoint before it dies too, and the second at
    # least four epochs from the end, so that the run is still running when it is cut short.
    rng = random.Random(1205)
    first_kill = rng.randint(30, 100)
    kills = [first_kill, rng.randint(first_kill + 50, 168)]
    workers = []
    try:
        for attempt, kill_at in enumerate(kills, start=1):
            workers.append(_worker(home, home / f"worker{attempt}.log"))
            _run_until_step(workers[-1], store, run_id, attempt, kill_at)
            run, step = store.get_run(run_id), _latest_step(store, run_id)
            os.killpg(workers[-1].pid, signal.SIGKILL)
            workers[-1].wait()
            assert (run.status, run.attempts) == ("running", attempt), (
                f"attempt {attempt} was {run.status} (attempts {run.attempts}, step {step}) when killed at step "
                f"{kill_at}")
        workers.append(_worker(home, home / "last.log"))
        _wait_for(lambda: store.get_run(run_id).status in ("done", "failed"), "the run to finish")
    finally:
        _end(*workers)
    assert store.get_run(run_id).attempts == 3, [e["message"] for e in store.events(run_id)]
    _assert_done_once_and_equal(store, run_id, reference)


#: checkpoints of the big student below are 9 MB; the database, the logs and the teacher stay far below this
FILE_SIZE_LIMIT = 2 << 20


def _full_disk() -> None:
    """The worker's files may not grow past FILE_SIZE_LIMIT: a write beyond fails as on a full disk (EFBIG rather
    than ENOSPC; without root there is no small tmpfs to fill, and a limit needs no fault hook in the engine)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead of failing the write
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_a_full_disk_fails_the_run_with_a_message_and_a_later_worker_resumes_it(home: Path) -> None:
    store = Store(home)
    run_id = _submit(store, tiny_spec_dict(student={"arch": "mlp", "arch_params": {"hidden": [1024, 1024]}}))
    full = _worker(home, home / "full.log", "--once", preexec=_full_disk)
    assert full.wait(timeout=DEADLINE) == 0, (home / "full.log").read_text()[-2000:]
    run = store.get_run(run_id)
    assert run.status == "failed"
    assert "no space left writing" in run.error and "epoch_000.pt" in run.error, run.error
    assert "python -m engine resume" in run.error
    log = (home / "full.log").read_text()
    assert "Traceback" not in log and "During handling" not in log, log[-3000:]
    assert not list((run_dir(home, run_id) / "checkpoints").glob("*.tmp")), "a partial checkpoint was left behind"
    listed = engine_cli("ls", timeout=60)
    assert listed.returncode == 0 and f"{run_id} failed" in " ".join(listed.stdout.split()), listed.stderr
    assert Store(home, readonly=True).metrics(run_id), "the store must stay readable"
    assert engine_cli("resume", run_id, "--queue", timeout=60).returncode == 0
    later = _worker(home, home / "later.log", "--once")
    assert later.wait(timeout=DEADLINE) == 0
    run = store.get_run(run_id)
    assert run.status == "done", run.error
    assert _duplicated_metric_rows(store, run_id) == 0


def test_ctrl_c_ends_a_foreground_run_interrupted_and_it_resumes_equal(home: Path, tmp_path: Path, reference) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(_spec()))
    foreground = subprocess.Popen([sys.executable, "-m", "engine", "run", str(spec_file)], cwd=ROOT,
                                  env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = Store(home)
    _wait_for(lambda: bool(store.list_runs()), "the run to be created")
    run_id = store.list_runs()[0].id
    _wait_for(lambda: (run_dir(home, run_id) / "checkpoints" / "epoch_001.pt").exists(), "two epochs")
    foreground.send_signal(signal.SIGINT)
    out, err = foreground.communicate(timeout=60)
    assert foreground.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    run = store.get_run(run_id)
    assert (run.status, run.attempts) == ("interrupted", 0)
    assert '"status": "interrupted"' in out.splitlines()[-1]
    resumed = engine_cli("resume", run_id, timeout=DEADLINE)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _assert_done_once_and_equal(store, run_id, reference)


def test_two_workers_and_a_polling_reader_never_see_a_locked_database(home: Path) -> None:
    store = Store(home)
    run_ids = [_submit(store, tiny_spec_dict(epochs=4, seed=seed)) for seed in range(4)]
    workers = [_worker(home, home / f"worker{n}.log") for n in range(2)]
    errors: list[str] = []
    reads = 0
    stop = threading.Event()

    def read_as_live_does() -> None:  # pages/live.py: the run list, one run, its metrics and events, every 2 s
        nonlocal reads
        reader = Store(home, readonly=True)
        while not stop.is_set():
            try:
                for run in reader.list_runs():
                    reader.metrics(run.id)
                    reader.events(run.id)
                reads += 1
            except Exception as err:  # noqa: BLE001 - every error is what this test looks for
                errors.append(f"{type(err).__name__}: {err}")
            stop.wait(0.5)  # four times Live's cadence, to press harder
        reader.close()

    thread = threading.Thread(target=read_as_live_does)
    thread.start()
    try:
        _wait_for(lambda: all(store.get_run(r).status in ("done", "failed") for r in run_ids), "all runs to finish")
    finally:
        stop.set()
        thread.join()
        _end(*workers)
    assert errors == []
    assert reads > 0
    assert [store.get_run(r).status for r in run_ids] == ["done"] * 4
    for n in range(2):
        assert "database is locked" not in (home / f"worker{n}.log").read_text()
    assert all(_duplicated_metric_rows(store, r) == 0 for r in run_ids)
