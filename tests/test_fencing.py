"""Fencing and "no run left running", in one process: attempt tokens, writes of a reclaimed attempt refused, files
swapped in only while the claim holds, the v1 -> v2 migration, orphaned runs marked interrupted, runs handed back."""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from engine.reporting import StoreReporter
from engine.runtime import LostClaim
from engine.spec import parse_spec, spec_to_yaml
from engine.store import SCHEMA_VERSION, Store, db_path, init_workspace
from engine.worker import execute_claimed
from engine.workspace import fenced_files, save_atomic
from tests.conftest import engine_cli, tiny_spec_dict


def _queued(store: Store, **overrides) -> str:
    spec = parse_spec(tiny_spec_dict(**overrides))
    return store.create_run(spec_to_yaml(spec), spec.name)


def _reclaimed(store: Store, run_id: str) -> None:
    """As if the owner had stopped beating long ago and another worker reclaimed the run."""
    store.con.execute("UPDATE runs SET heartbeat_at=0 WHERE id=?", (run_id,))
    store.con.commit()
    assert store.reclaim_stale_runs(max_age_s=60, max_attempts=3) == [(run_id, "requeued")]


def test_each_claim_carries_a_new_attempt_token(home: Path) -> None:
    store = Store(home)
    run_id = _queued(store)
    first = store.claim_run("w1")
    _reclaimed(store, run_id)
    second = store.claim_run("w2")
    assert first.attempt_token and second.attempt_token and first.attempt_token != second.attempt_token
    assert store.get_run(run_id).attempt_token == second.attempt_token


def test_a_reclaimed_attempt_cannot_write_anything(home: Path) -> None:
    store = Store(home)
    run_id = _queued(store)
    old = store.claim_run("w1")
    _reclaimed(store, run_id)
    new = store.claim_run("w2")
    stale = StoreReporter(store, run_id, token=old.attempt_token)
    for write in (lambda: stale.log("main", 5, 0, {"loss/total": 1.0}), lambda: stale.event("info", "late"),
                  lambda: stale.progress(1.0, "main"),
                  lambda: stale.truncate("main", -1),
                  lambda: store.finish_run(run_id, "done", result={"test_acc": 1}, token=old.attempt_token),
                  lambda: store.release_run(run_id, old.attempt_token, "queued", "late")):
        with pytest.raises(LostClaim):
            write()
    run = store.get_run(run_id)
    assert (run.status, run.worker_id, run.progress) == ("running", "w2", 0.0)
    assert store.metrics(run_id) == []
    assert not any(e["message"] == "late" for e in store.events(run_id))
    StoreReporter(store, run_id, token=new.attempt_token).event("info", "the owner writes")
    assert store.events(run_id)[-1]["message"] == "the owner writes"


def test_a_reclaimed_attempt_heartbeat_does_not_keep_the_run_alive(home: Path) -> None:
    store = Store(home)
    run_id = _queued(store)
    old = store.claim_run("w1")
    _reclaimed(store, run_id)
    store.claim_run("w2")
    store.con.execute("UPDATE runs SET heartbeat_at=0 WHERE id=?", (run_id,))
    store.con.commit()
    store.worker_heartbeat("w1", run_id, old.attempt_token)
    assert store.get_run(run_id).heartbeat_at == 0


def test_checkpoints_are_swapped_in_only_while_the_claim_holds(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    store = Store(home)
    run_id = _queued(store)
    old = StoreReporter(store, run_id, token=store.claim_run("w1").attempt_token)
    target = folder / "last.pt"
    with fenced_files(old.file_fence()):
        save_atomic({"epoch": 0}, target)
    assert target.exists()
    _reclaimed(store, run_id)
    store.claim_run("w2")
    before = target.read_bytes()
    with fenced_files(old.file_fence()), pytest.raises(LostClaim):
        save_atomic({"epoch": 1}, target)
    assert target.read_bytes() == before, "a reclaimed attempt replaced the checkpoint"
    assert [p.name for p in folder.iterdir()] == ["last.pt"], "the attempt's temporary file was left behind"


def test_two_attempts_never_share_a_temporary_checkpoint_name(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    store = Store(home)
    run_id = _queued(store)
    token = store.claim_run("w1").attempt_token
    seen: list[str] = []
    fence = StoreReporter(store, run_id, token=token).file_fence()
    spy = type(fence)(fence.tag, lambda rename: (seen.extend(p.name for p in folder.iterdir()), rename()))
    with fenced_files(spy):
        save_atomic({"epoch": 0}, folder / "last.pt")
    assert seen == [f"last.pt.{token}.tmp"]


V1_RUNS = """CREATE TABLE runs (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, group_id TEXT, spec_yaml TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued','running','done','failed','cancelled')),
    phase TEXT NOT NULL DEFAULT '', progress REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL, started_at REAL,
    finished_at REAL, heartbeat_at REAL, worker_id TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0, error TEXT, result_json TEXT)"""


def test_a_version_1_workspace_is_migrated_keeping_its_runs(tmp_path: Path) -> None:
    home = tmp_path / "old"
    home.mkdir()
    con = sqlite3.connect(db_path(home))
    con.executescript(V1_RUNS + ";\nCREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
                      "INSERT INTO meta VALUES ('schema_version', '1');")
    con.execute("INSERT INTO runs (id, name, spec_yaml, status, created_at, attempts, result_json)"
                " VALUES ('r1', 'old run', 'name: x', 'done', 1.0, 1, '{\"test_acc\": 0.9}')")
    con.commit()
    con.close()
    init_workspace(home)
    store = Store(home)
    run = store.get_run("r1")
    assert (run.name, run.status, run.attempts, run.result, run.attempt_token) == ("old run", "done", 1,
                                                                                   {"test_acc": 0.9}, None)
    version = store.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION
    run_id = _queued(store)
    store.claim_run("w")
    assert store.interrupt_orphaned_runs(max_age_s=-1) == [run_id]  # the new status is accepted
    init_workspace(home)  # idempotent once migrated
    assert store.get_run("r1").status == "done"


def test_engine_ls_marks_a_run_whose_process_died_interrupted(home: Path) -> None:
    store = Store(home)
    run_id = _queued(store)
    store.claim_run("cli-99999")
    store.con.execute("UPDATE runs SET heartbeat_at=? WHERE id=?", (time.time() - 3600, run_id))
    store.con.commit()
    listed = engine_cli("ls", timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert f"{run_id} interrupted" in " ".join(listed.stdout.split())
    run = store.get_run(run_id)
    assert (run.status, run.attempt_token) == ("interrupted", None)
    assert "python -m engine resume" in store.events(run_id)[-1]["message"]
    assert store.resume_run(run_id) and store.get_run(run_id).status == "queued"


def test_a_fresh_heartbeat_is_not_marked_interrupted(home: Path) -> None:
    store = Store(home)
    run_id = _queued(store)
    store.claim_run("w")
    assert store.interrupt_orphaned_runs(max_age_s=60) == []
    assert store.get_run(run_id).status == "running"


def test_a_worker_stopped_on_purpose_hands_its_run_back_without_spending_an_attempt(home: Path) -> None:
    store = Store(home)
    run_id = _queued(store, epochs=50)
    run = store.claim_run("w")
    stop = threading.Event()
    stop.set()  # SIGTERM arrived: the run stops at its first step
    assert execute_claimed(store, run, stop) is None
    after = store.get_run(run_id)
    assert (after.status, after.attempts, after.attempt_token) == ("queued", 0, None)
    assert "went back to the queue" in store.events(run_id)[-1]["message"]


def test_a_stopped_foreground_run_ends_interrupted_and_resumes(home: Path) -> None:
    store = Store(home)
    run_id = _queued(store)
    stop = threading.Event()
    stop.set()
    assert execute_claimed(store, store.claim_run("cli", run_id), stop, stopped_status="interrupted") is None
    assert store.get_run(run_id).status == "interrupted"
    assert store.resume_run(run_id)
    result = execute_claimed(store, store.claim_run("cli", run_id), threading.Event())
    assert result is not None and store.get_run(run_id).status == "done"
    assert not store.resume_run(run_id), "a done run is not resumable"


def test_stopping_worker_hands_back_what_it_still_holds(home: Path) -> None:
    store = Store(home)
    run_id = _queued(store)
    store.claim_run("w")
    assert store.release_worker_runs("w", "worker w stopped") == [run_id]
    assert (store.get_run(run_id).status, store.get_run(run_id).attempts) == ("queued", 0)


def test_a_worker_that_crashed_hands_back_its_run_but_the_attempt_counts(home: Path) -> None:
    """An error that escaped the worker's loop is not a stop on purpose: refunding it would let a run that
    always crashes its worker retry forever under a restarting dashboard."""
    store = Store(home)
    run_id = _queued(store)
    store.claim_run("w")
    assert store.release_worker_runs("w", "worker w crashed", refund=False) == [run_id]
    assert (store.get_run(run_id).status, store.get_run(run_id).attempts) == ("queued", 1)


def test_a_failure_is_recorded_first_and_small(home: Path) -> None:
    store = Store(home)
    run_id = _queued(store, teachers=[{"id": "t", "arch": "mlp", "arch_params": {"hidden": [32]},
                                       "source": {"kind": "checkpoint", "path": str(home / "gone.pt")}}])
    assert execute_claimed(store, store.claim_run("w"), threading.Event()) is None
    run = store.get_run(run_id)
    assert run.status == "failed" and "gone.pt" in run.error
    assert "Traceback" not in run.error and "\n" not in run.error


def test_the_dashboard_run_list_marks_a_run_whose_process_died_interrupted(home: Path) -> None:
    from app import cached

    store = Store(home)
    run_id = _queued(store)
    store.claim_run("laptop-123")
    store.con.execute("UPDATE runs SET heartbeat_at=? WHERE id=?", (time.time() - 3600, run_id))
    store.con.commit()
    frame = cached.runs(str(home))
    assert frame.set_index("id").loc[run_id, "status"] == "interrupted"
