"""Run store: schema, claims, stale-run recovery, read-only readers while a writer writes."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.store import SCHEMA_VERSION, Store, WorkspaceError, init_workspace
from tests.conftest import ROOT

WRITER = """
import sys, time
from engine.store import Store
store = Store(sys.argv[1])
for batch in range(40):
    store.add_metrics(sys.argv[2], [("main", batch * 100 + i, 0, "loss/total", float(i)) for i in range(100)])
    time.sleep(0.02)
"""


def test_schema_is_versioned_and_wal(home: Path) -> None:
    store = Store(home, readonly=True)
    assert store.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)


def test_reader_never_writes(home: Path) -> None:
    store = Store(home, readonly=True)
    with pytest.raises(Exception, match="readonly"):
        store.create_run("name: x", "x")


def test_readonly_on_missing_workspace_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="no workspace at"):
        Store(tmp_path / "nothing", readonly=True)


def test_unwritable_workspace_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(WorkspaceError, match="is not writable.*PATHSCOPE_HOME"):
        init_workspace(blocker / "ws")


def test_claims_are_exclusive_and_ordered(home: Path) -> None:
    store = Store(home)
    first = store.create_run("name: a", "a")
    second = store.create_run("name: b", "b")
    assert store.claim_run("w1").id == first
    assert store.claim_run("w2").id == second
    assert store.claim_run("w3") is None
    assert store.get_run(first).status == "running" and store.get_run(first).attempts == 1


def test_cancel_queued_run_is_immediate(home: Path) -> None:
    store = Store(home)
    run_id = store.create_run("name: a", "a")
    store.request_cancel(run_id)
    assert store.get_run(run_id).status == "cancelled"
    assert store.claim_run("w") is None


def test_stale_runs_are_requeued_then_failed(home: Path) -> None:
    store = Store(home)
    run_id = store.create_run("name: a", "a")
    for attempt in (1, 2):
        store.claim_run("w", run_id)
        store.con.execute("UPDATE runs SET heartbeat_at=0 WHERE id=?", (run_id,))
        store.con.commit()
        assert store.reclaim_stale_runs(5, max_attempts=2) == [(run_id, "requeued" if attempt == 1 else "failed")]
    run = store.get_run(run_id)
    assert run.status == "failed" and "tried 2 times" in run.error
    assert [e["level"] for e in store.events(run_id)] == ["warning", "warning"]


def test_read_while_another_process_writes(home: Path) -> None:
    writer_store = Store(home)
    run_id = writer_store.create_run("name: a", "a")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(home), run_id], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    reader = Store(home, readonly=True)
    counts = []
    while writer.poll() is None:
        counts.append(len(reader.metrics(run_id)))  # must never raise "database is locked"
        time.sleep(0.01)
    assert writer.returncode == 0
    counts.append(len(reader.metrics(run_id)))
    assert counts == sorted(counts), "a reader saw rows disappear"
    assert counts[-1] == 4000
    assert len(set(counts)) > 2, "the reader should have seen the writer's progress"


def test_arrays_round_trip_with_sample_ids_and_columns(home: Path) -> None:
    import numpy as np

    from engine.telemetry import Recorded

    store = Store(home)
    run_id = store.create_run("name: a", "a")
    weights = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]], dtype=np.float32)
    store.add_arrays(run_id, [("main", 50, 1, "amtml/teacher_weights", Recorded(weights, np.array([7, 3, 9]), ["a", "b"])),
                              ("main", 0, 0, "amtml/teacher_weights", Recorded(weights[:1], np.array([1]), ["a", "b"]))])
    first, second = Store(home, readonly=True).arrays(run_id, "amtml/teacher_weights")
    assert (first.step, second.step) == (0, 50)
    np.testing.assert_array_equal(second.values, weights)
    assert second.index.tolist() == [7, 3, 9] and second.columns == ["a", "b"]
    store.delete_metrics_after(run_id, "main", 0)
    assert [a.step for a in store.arrays(run_id, "amtml/teacher_weights")] == [0]
    assert store.array_keys(run_id) == ["amtml/teacher_weights"]


def test_jobs_are_claimed_once_finished_and_requeued_when_orphaned(home: Path) -> None:
    store = Store(home)
    run_id = store.create_run("name: a", "a")
    job_id = store.create_job(run_id, "explain", {"method": "saliency"})
    assert store.claim_job("w1").id == job_id
    assert store.claim_job("w2") is None
    assert store.requeue_orphaned_jobs(["w1"]) == 0  # its worker is alive
    assert store.requeue_orphaned_jobs(["w2"]) == 1  # w1 is gone: back in the queue
    job = store.claim_job("w2")
    store.finish_job(job.id, "done", result={"maps": 3})
    (listed,) = store.list_jobs(run_id, kind="explain")
    assert listed.status == "done" and listed.result == {"maps": 3} and listed.params == {"method": "saliency"}
