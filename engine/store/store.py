"""The Store: runs, metrics, arrays, events, jobs and workers of one workspace's database (engine/store/schema.py
holds its tables and migrations)."""
from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from engine.runtime import LostClaim
from engine.store.columns import RESULT_COLUMNS, SPEC_COLUMNS, result_values, summarise_spec, write_refs
from engine.store.rows import JobRow, RunRow, StoredArray, new_run_id
from engine.store.schema import (
    FINAL_STATUSES, SCHEMA_VERSION, WorkspaceError, connect, db_path, init_workspace, stored_version,
)
from engine.telemetry import Recorded
from engine.workspace import run_dir, workspace_home

#: a run that can still change without anyone asking: pages poll it, groups wait for it
ACTIVE_STATUSES = ("queued", "running")
#: a run ``resume_run`` can queue again from its last checkpoint
RESUMABLE_STATUSES = ("interrupted", "failed")
#: A running run whose heartbeat is older than this has lost its worker. Heartbeats come every 2 s from
#: their own thread, so only a stopped process misses them: 60 s covers a GC pause, a heartbeat that waited
#: out the 10 s busy timeout several times in a row, and a laptop lid closed for a minute. A longer suspension
#: is safe too: the reclaimed worker's next write fails its attempt token and it stops (fencing), and a
#: worker that itself just woke waits a beat before reclaiming (worker.serve).
STALE_AFTER_SECONDS = 60.0

#: SQL: a run for local workers (one a Ray driver reserved says so in its placement)
_LOCAL_RUN = "COALESCE(json_extract(placement_json, '$.executor'), 'local') != 'ray'"


def _json_or_none(value: dict[str, Any] | None) -> str | None:
    return json.dumps(value) if value is not None else None


def mark_orphaned_runs(home: Path) -> list[str]:
    """For processes that list runs but train none (``engine ls``, the dashboard): mark runs whose process died
    `interrupted` (Store.interrupt_orphaned_runs), so none is shown `running` forever. A workspace that does not
    exist yet or that this user cannot write is left as it is. Returns the ids marked."""
    if not db_path(home).exists():
        return []
    try:
        store = Store(home)
    except WorkspaceError:
        return []
    try:
        return store.interrupt_orphaned_runs(STALE_AFTER_SECONDS)
    except sqlite3.OperationalError:  # a read-only file or folder: the runs are only listed
        return []
    finally:
        store.close()


#: the columns a RunRow holds, selected by name: the run table's own columns are read by engine.catalog
_RUN_ROW_SQL = ", ".join(f.name for f in fields(RunRow))


class Store:
    """Access to one workspace's database. ``Store(home, readonly=True)`` for readers."""

    def __init__(self, home: Path | None = None, readonly: bool = False) -> None:
        self.home = Path(home) if home else workspace_home()
        if not db_path(self.home).exists():
            if readonly:
                raise WorkspaceError(f"no workspace at {self.home} yet: start a run or a worker first")
            init_workspace(self.home)
        self.readonly = readonly
        self.con = connect(db_path(self.home), readonly)
        if readonly and stored_version(self.con) < SCHEMA_VERSION:
            # A workspace written by an older PathScope: a reader would fail on the newer columns, so the first
            # one to open it upgrades it (one transaction under the write lock, as a writer's open does).
            self.con.close()
            init_workspace(self.home)
            self.con = connect(db_path(self.home), readonly)

    def close(self) -> None:
        self.con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so a claim cannot race another worker.
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield self.con
        except BaseException:
            self.con.rollback()
            raise
        else:
            self.con.commit()

    def write_transaction(self) -> Iterator[sqlite3.Connection]:
        """The write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on an error), for modules that keep tables
        of their own in this database (engine.catalog): safe with several processes writing."""
        return self._write()

    @contextmanager
    def _run_write(self, run_id: str, token: str | None) -> Iterator[sqlite3.Connection]:
        """A write for a run; given the attempt token of a claim, it happens only while that claim holds (the check
        and the write share one transaction, so a reclaim cannot slip in between)."""
        with self._write() as con:
            if token is not None:
                found = con.execute("SELECT attempt_token FROM runs WHERE id=?", (run_id,)).fetchone()
                if found is None or found[0] != token:
                    raise LostClaim(f"run {run_id} was reclaimed by another attempt; this one stops writing")
            yield con

    def while_holding(self, run_id: str, token: str, action: Callable[[], None]) -> None:
        """Run ``action`` (a file rename) only while the claim holds, under the write lock so no reclaim races it."""
        with self._run_write(run_id, token):
            action()

    # ---------------------------------------------------------------- runs
    def create_run(self, spec_yaml: str, name: str, group_id: str | None = None,
                   status: str = "queued", placement: dict[str, Any] | None = None) -> str:
        """A new run; ``placement`` {"executor": "ray", ...} reserves it for a Ray driver (local workers skip it)."""
        run_id = new_run_id()
        while self.get_run(run_id) is not None:  # two runs submitted in the same second
            run_id = new_run_id()
        folder = run_dir(self.home, run_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "spec.yaml").write_text(spec_yaml)
        summary = summarise_spec(spec_yaml)  # the run table's fields, parsed once here rather than at each listing
        columns = ("id, name, group_id, spec_yaml, status, created_at, placement_json, " + ", ".join(SPEC_COLUMNS))
        with self._write() as con:
            con.execute(f"INSERT INTO runs ({columns}) VALUES ({', '.join('?' * (7 + len(SPEC_COLUMNS)))})",
                        (run_id, name, group_id, spec_yaml, status, time.time(), _json_or_none(placement),
                         *summary.column_values()))
            write_refs(con, run_id, summary)
        return run_id

    def get_run(self, run_id: str) -> RunRow | None:
        row = self.con.execute(f"SELECT {_RUN_ROW_SQL} FROM runs WHERE id=?", (run_id,)).fetchone()
        return RunRow(**dict(row)) if row else None

    def list_runs(self, statuses: Iterable[str] | None = None, group_id: str | None = None) -> list[RunRow]:
        """Runs newest first, optionally only those with one of ``statuses`` and/or in group ``group_id``."""
        clauses, args = [], []
        if statuses:
            statuses = tuple(statuses)
            clauses.append(f"status IN ({','.join('?' * len(statuses))})")
            args += statuses
        if group_id is not None:
            clauses.append("group_id = ?")
            args.append(group_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.con.execute(f"SELECT {_RUN_ROW_SQL} FROM runs{where} ORDER BY created_at DESC", args).fetchall()
        return [RunRow(**dict(r)) for r in rows]

    def claim_run(self, worker_id: str, run_id: str | None = None) -> RunRow | None:
        """Mark the oldest queued run (or the given one) running for this worker, under a new attempt token.

        Without ``run_id`` only runs for local workers are taken: one reserved for a Ray driver is left to it.
        """
        with self._write() as con:
            if run_id is None:
                row = con.execute("SELECT id FROM runs WHERE status='queued' AND cancel_requested=0"
                                  f" AND {_LOCAL_RUN} ORDER BY created_at LIMIT 1").fetchone()
            else:
                row = con.execute("SELECT id FROM runs WHERE status='queued' AND id=?", (run_id,)).fetchone()
            if row is None:
                return None
            now = time.time()
            con.execute(
                "UPDATE runs SET status='running', worker_id=?, started_at=COALESCE(started_at, ?),"
                " heartbeat_at=?, attempts=attempts+1, error=NULL, attempt_token=? WHERE id=?",
                (worker_id, now, now, secrets.token_hex(8), row["id"]),
            )
        return self.get_run(row["id"])

    def reclaim_stale_runs(self, max_age_s: float, max_attempts: int) -> list[tuple[str, str]]:
        """Runs whose worker stopped beating: requeue them (to resume) or fail them after max_attempts.

        Returns (run_id, "requeued" | "failed") for each. Done in one write transaction so
        two workers never recover the same run twice; clearing the attempt token fences the old owner out,
        should it only have been paused. Runs of a Ray driver that died are not a local worker's to requeue:
        interrupt_orphaned_runs marks them `interrupted` first.
        """
        self.interrupt_orphaned_runs(max_age_s, executor="ray")
        cutoff = time.time() - max_age_s
        outcomes = []
        with self._write() as con:
            rows = con.execute("SELECT id, worker_id, attempts FROM runs WHERE status='running'"
                               f" AND COALESCE(heartbeat_at, 0) < ? AND {_LOCAL_RUN}", (cutoff,)).fetchall()
            for row in rows:
                if row["attempts"] < max_attempts:
                    con.execute("UPDATE runs SET status='queued', worker_id=NULL, attempt_token=NULL WHERE id=?",
                                (row["id"],))
                    message = (f"worker {row['worker_id']} stopped responding; the run will resume from its "
                               f"last checkpoint (attempt {row['attempts'] + 1} of {max_attempts})")
                    outcomes.append((row["id"], "requeued"))
                else:
                    message = (f"worker {row['worker_id']} stopped responding and the run has already been "
                               f"tried {row['attempts']} times; giving up")
                    con.execute("UPDATE runs SET status='failed', error=?, finished_at=?, attempt_token=NULL"
                                " WHERE id=?", (message, time.time(), row["id"]))
                    outcomes.append((row["id"], "failed"))
                con.execute("INSERT INTO events (run_id, time, level, message) VALUES (?,?,?,?)",
                            (row["id"], time.time(), "warning", message))
        return outcomes

    def interrupt_orphaned_runs(self, max_age_s: float, executor: str | None = None) -> list[str]:
        """Running runs whose heartbeat stopped more than max_age_s ago: no process owns them. Mark them
        `interrupted` (resumable from their last checkpoint) so none stays `running` forever; returns their ids.

        For processes that will not resume them themselves (``engine ls``, the dashboard); a worker requeues them.
        ``executor="ray"``: only runs of a Ray driver (the driver's heartbeat stopped: it died with its trials).
        """
        cutoff = time.time() - max_age_s
        only = " AND json_extract(placement_json, '$.executor') = 'ray'" if executor == "ray" else ""
        with self._write() as con:
            rows = con.execute("SELECT id, worker_id FROM runs WHERE status='running'"
                               f" AND COALESCE(heartbeat_at, 0) < ?{only}", (cutoff,)).fetchall()
            for row in rows:
                con.execute("UPDATE runs SET status='interrupted', worker_id=NULL, attempt_token=NULL WHERE id=?",
                            (row["id"],))
                con.execute("INSERT INTO events (run_id, time, level, message) VALUES (?,?,?,?)",
                            (row["id"], time.time(), "warning",
                             f"{row['worker_id']} stopped responding with no worker to take the run over; "
                             f"interrupted, resume it with python -m engine resume {row['id']}"))
        return [row["id"] for row in rows]

    def release_run(self, run_id: str, token: str | None, status: str, reason: str, refund: bool = True) -> None:
        """End an attempt: back to the queue ('queued') or waiting for the user ('interrupted'); either resumes
        from the last checkpoint. ``refund``: it was stopped on purpose, so it does not count against the run's
        attempts; an attempt that ended in an error counts, or a run that always fails would retry forever."""
        assert status in ("queued", "interrupted"), status
        with self._run_write(run_id, token) as con:
            con.execute("UPDATE runs SET status=?, worker_id=NULL, attempt_token=NULL, attempts=MAX(attempts-?, 0)"
                        " WHERE id=?", (status, int(refund), run_id))
            con.execute("INSERT INTO events (run_id, time, level, message) VALUES (?,?,?,?)",
                        (run_id, time.time(), "warning", reason))

    def resume_run(self, run_id: str) -> bool:
        """Queue an interrupted or failed run again, to resume from its last checkpoint (after a full disk was
        freed, say) with a fresh count of attempts; False when the run is in neither state.

        Its placement is cleared: a run of a Ray driver that died resumes on a local worker (or in the foreground);
        so are the run table's result columns, which describe the attempt that ended, until it finishes again.
        """
        cleared = ", ".join(f"{column}=NULL" for column in RESULT_COLUMNS)
        with self._write() as con:
            return con.execute("UPDATE runs SET status='queued', error=NULL, finished_at=NULL, attempts=0,"
                               f" placement_json=NULL, {cleared} WHERE id=? AND status IN {RESUMABLE_STATUSES}",
                               (run_id,)).rowcount == 1

    def set_placement(self, run_id: str, placement: dict[str, Any], token: str | None = None) -> None:
        """Record where the run executes (see RunRow.placement); with a token, only while that claim holds."""
        with self._run_write(run_id, token) as con:
            con.execute("UPDATE runs SET placement_json=? WHERE id=?", (json.dumps(placement), run_id))

    def renew_claim(self, run_id: str, token: str) -> str:
        """A new attempt of a run its claimant executes again (a Ray trial restarted after its process died):
        a fresh token, so writes still carrying the old one are refused, and one more attempt counted."""
        new_token = secrets.token_hex(8)
        with self._run_write(run_id, token) as con:
            con.execute("UPDATE runs SET attempt_token=?, attempts=attempts+1, heartbeat_at=? WHERE id=?",
                        (new_token, time.time(), run_id))
        return new_token

    def update_progress(self, run_id: str, progress: float, phase: str, token: str | None = None) -> None:
        with self._run_write(run_id, token) as con:
            con.execute("UPDATE runs SET progress=?, phase=?, heartbeat_at=? WHERE id=?",
                        (progress, phase, time.time(), run_id))

    def finish_run(self, run_id: str, status: str, error: str | None = None,
                   result: dict[str, Any] | None = None, token: str | None = None) -> None:
        """The run's final state; with the attempt's token, only if that attempt still owns the run. The run table's
        final and best accuracy are taken from the result and the stored per-epoch accuracies in the same write."""
        assert status in FINAL_STATUSES, status
        with self._run_write(run_id, token) as con:
            now = time.time()
            con.execute(
                "UPDATE runs SET status=?, error=?, result_json=?, finished_at=?,"
                " progress=CASE WHEN ?='done' THEN 1.0 ELSE progress END,"
                f" {', '.join(f'{c}=?' for c in RESULT_COLUMNS)} WHERE id=?",
                (status, error, json.dumps(result) if result is not None else None,
                 now, status, *result_values(con, run_id, result, now), run_id),
            )

    def request_cancel(self, run_id: str) -> None:
        """Queued runs are cancelled at once; running ones at the next step boundary."""
        with self._write() as con:
            con.execute("UPDATE runs SET cancel_requested=1 WHERE id=?", (run_id,))
            con.execute(
                "UPDATE runs SET status='cancelled', finished_at=? WHERE id=? AND status='queued'",
                (time.time(), run_id),
            )

    def cancel_requested(self, run_id: str) -> bool:
        row = self.con.execute("SELECT cancel_requested FROM runs WHERE id=?", (run_id,)).fetchone()
        return bool(row and row[0])

    # ---------------------------------------------------------------- metrics and events
    def add_metrics(self, run_id: str, rows: list[tuple[str, int, int, str, float]], token: str | None = None
                    ) -> None:
        """rows: (phase, step, epoch, key, value)."""
        if not rows:
            return
        with self._run_write(run_id, token) as con:
            con.executemany(
                "INSERT INTO metrics (run_id, phase, step, epoch, key, value) VALUES (?,?,?,?,?,?)",
                [(run_id, *r) for r in rows],
            )

    def delete_metrics_after(self, run_id: str, phase: str, epoch: int, token: str | None = None) -> None:
        """On resume, drop what was logged after the checkpoint so series stay single-valued."""
        with self._run_write(run_id, token) as con:
            con.execute("DELETE FROM metrics WHERE run_id=? AND phase=? AND epoch>?", (run_id, phase, epoch))
            con.execute("DELETE FROM arrays WHERE run_id=? AND phase=? AND epoch>?", (run_id, phase, epoch))

    def add_arrays(self, run_id: str, rows: list[tuple[str, int, int, str, Recorded]], token: str | None = None
                   ) -> None:
        """rows: (phase, step, epoch, key, recorded array with its sample ids and column names)."""
        if not rows:
            return
        with self._run_write(run_id, token) as con:
            con.executemany(
                "INSERT INTO arrays (run_id, phase, step, epoch, key, dtype, shape, data, sample_index, columns)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(run_id, phase, step, epoch, key, str(r.values.dtype), json.dumps(list(r.values.shape)),
                  np.ascontiguousarray(r.values).tobytes(), np.asarray(r.index, dtype=np.int64).tobytes(),
                  json.dumps(r.columns) if r.columns is not None else None)
                 for phase, step, epoch, key, r in rows],
            )

    def arrays(self, run_id: str, key: str, phase: str | None = None) -> list[StoredArray]:
        sql, args = "SELECT * FROM arrays WHERE run_id=? AND key=?", [run_id, key]
        if phase is not None:
            sql += " AND phase=?"
            args.append(phase)
        return [StoredArray.from_row(r) for r in self.con.execute(sql + " ORDER BY step", args).fetchall()]

    def array_keys(self, run_id: str) -> list[str]:
        rows = self.con.execute("SELECT DISTINCT key FROM arrays WHERE run_id=? ORDER BY key", (run_id,))
        return [r[0] for r in rows.fetchall()]

    def last_metrics(self, run_id: str, keys: Iterable[str], phase: str) -> list[sqlite3.Row]:
        """The last logged row (highest step) of each key, one index lookup per key whatever the run's length."""
        sql = ("SELECT phase, step, epoch, key, value FROM metrics WHERE run_id=? AND phase=? AND key=? "
               "ORDER BY step DESC LIMIT 1")
        return [row for key in keys for row in self.con.execute(sql, (run_id, phase, key)).fetchall()]

    def metric_keys(self, run_id: str, phase: str) -> list[str]:
        """The keys a run logged in ``phase``, sorted: found by jumping along the (run_id, phase, key, step) index
        from one key to the next (a few dozen lookups, where SELECT DISTINCT walks every row the run logged)."""
        keys: list[str] = []
        sql = "SELECT min(key) FROM metrics WHERE run_id=? AND phase=? AND key>?"
        while (key := self.con.execute(sql, (run_id, phase, keys[-1] if keys else "")).fetchone()[0]) is not None:
            keys.append(key)
        return keys

    def metrics(self, run_id: str, keys: Iterable[str] | None = None, phase: str | None = None
                ) -> list[sqlite3.Row]:
        sql, args = "SELECT phase, step, epoch, key, value FROM metrics WHERE run_id=?", [run_id]
        if phase is not None:
            sql += " AND phase=?"
            args.append(phase)
        if keys is not None:
            keys = list(keys)
            sql += f" AND key IN ({','.join('?' * len(keys))})"
            args += keys
        return self.con.execute(sql + " ORDER BY phase, key, step", args).fetchall()

    def add_event(self, run_id: str | None, level: str, message: str,
                  data: dict[str, Any] | None = None, token: str | None = None) -> None:
        with self._run_write(run_id, token) as con:
            con.execute(
                "INSERT INTO events (run_id, time, level, message, data_json) VALUES (?,?,?,?,?)",
                (run_id, time.time(), level, message, json.dumps(data) if data else None),
            )

    def events(self, run_id: str) -> list[sqlite3.Row]:
        return self.con.execute(
            "SELECT time, level, message, data_json FROM events WHERE run_id=? ORDER BY id", (run_id,)
        ).fetchall()

    # ---------------------------------------------------------------- jobs (short work on a run: explain, ...)
    def create_job(self, run_id: str, kind: str, params: dict[str, Any]) -> str:
        job_id = "job-" + new_run_id()
        with self._write() as con:
            con.execute("INSERT INTO jobs (id, run_id, kind, params_json, status, created_at) VALUES (?,?,?,?,?,?)",
                        (job_id, run_id, kind, json.dumps(params, sort_keys=True), "queued", time.time()))
        return job_id

    def get_job(self, job_id: str) -> JobRow | None:
        row = self.con.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return JobRow(**dict(row)) if row else None

    def list_jobs(self, run_id: str, kind: str | None = None) -> list[JobRow]:
        sql, args = "SELECT * FROM jobs WHERE run_id=?", [run_id]
        if kind is not None:
            sql += " AND kind=?"
            args.append(kind)
        return [JobRow(**dict(r)) for r in self.con.execute(sql + " ORDER BY created_at DESC", args).fetchall()]

    def claim_job(self, worker_id: str, job_id: str | None = None) -> JobRow | None:
        """The oldest queued job (or the given one), marked running for this worker (jobs are short: workers
        take them first)."""
        with self._write() as con:
            if job_id is None:
                row = con.execute("SELECT id FROM jobs WHERE status='queued' ORDER BY created_at LIMIT 1").fetchone()
            else:
                row = con.execute("SELECT id FROM jobs WHERE status='queued' AND id=?", (job_id,)).fetchone()
            if row is None:
                return None
            con.execute("UPDATE jobs SET status='running', worker_id=? WHERE id=?", (worker_id, row["id"]))
        return self.get_job(row["id"])

    def update_job_progress(self, job_id: str, progress: float) -> None:
        with self._write() as con:
            con.execute("UPDATE jobs SET progress=? WHERE id=?", (progress, job_id))

    def finish_job(self, job_id: str, status: str, error: str | None = None,
                   result: dict[str, Any] | None = None) -> None:
        assert status in FINAL_STATUSES, status
        with self._write() as con:
            con.execute("UPDATE jobs SET status=?, error=?, result_json=?, finished_at=?,"
                        " progress=CASE WHEN ?='done' THEN 1.0 ELSE progress END WHERE id=?",
                        (status, error, json.dumps(result) if result is not None else None, time.time(), status,
                         job_id))

    def requeue_orphaned_jobs(self, live_worker_ids: Iterable[str]) -> int:
        """Running jobs whose worker is gone go back to the queue (they are short and idempotent)."""
        live = tuple(live_worker_ids)
        with self._write() as con:
            sql = "UPDATE jobs SET status='queued', worker_id=NULL WHERE status='running'"
            if live:
                sql += f" AND worker_id NOT IN ({','.join('?' * len(live))})"
            return con.execute(sql, live).rowcount

    # ---------------------------------------------------------------- workers
    def register_worker(self, worker_id: str, device: str) -> None:
        now = time.time()
        with self._write() as con:
            con.execute(
                "INSERT OR REPLACE INTO workers (id, pid, host, device, started_at, heartbeat_at)"
                " VALUES (?,?,?,?,?,?)",
                (worker_id, os.getpid(), os.uname().nodename, device, now, now),
            )

    def worker_heartbeat(self, worker_id: str, run_id: str | None, token: str | None = None) -> None:
        """Stamp the worker and, while its attempt still owns it, its run (a reclaimed run is not kept alive)."""
        self.heartbeat_runs(worker_id, {run_id: token} if run_id else {})

    def heartbeat_runs(self, worker_id: str, runs: dict[str, str | None]) -> None:
        """Stamp the worker and each of its runs (run id -> attempt token) that its attempt still owns: one write
        for a Ray driver holding every run of a sweep."""
        now = time.time()
        with self._write() as con:
            con.execute("UPDATE workers SET heartbeat_at=? WHERE id=?", (now, worker_id))
            con.executemany("UPDATE runs SET heartbeat_at=? WHERE id=? AND status='running' AND attempt_token IS ?",
                            [(now, run_id, token) for run_id, token in runs.items()])

    def release_worker_runs(self, worker_id: str, reason: str, refund: bool = True) -> list[str]:
        """Hand back every run a stopping worker still holds: they go back to the queue at once rather than
        waiting out the stale grace; ``refund`` as in release_run."""
        held = self.con.execute("SELECT id, attempt_token FROM runs WHERE status='running' AND worker_id=?",
                                (worker_id,)).fetchall()
        released = []
        for row in held:
            try:
                self.release_run(row["id"], row["attempt_token"], "queued", reason, refund)
                released.append(row["id"])
            except LostClaim:  # reclaimed meanwhile: it is no longer this worker's to hand back
                continue
        return released

    def stop_worker(self, worker_id: str) -> None:
        with self._write() as con:
            con.execute("UPDATE workers SET stopped_at=? WHERE id=?", (time.time(), worker_id))

    def live_workers(self, max_age_s: float) -> list[sqlite3.Row]:
        cutoff = time.time() - max_age_s
        return self.con.execute(
            "SELECT * FROM workers WHERE stopped_at IS NULL AND heartbeat_at >= ?", (cutoff,)
        ).fetchall()
