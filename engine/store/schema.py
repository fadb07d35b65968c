"""The database's schema, its migrations, and opening it.

Writers (the engine) open the database read-write; readers (the dashboard) open it read-only and never run DDL.
The schema and WAL mode are created once by ``init_workspace`` before any writer starts.
"""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from engine.store.columns import RESULT_COLUMNS, SPEC_COLUMNS, result_values, summarise_spec, write_refs
from engine.workspace import workspace_home

#: 2: runs.attempt_token (fencing) and the `interrupted` status; 3: runs.placement_json (where each run executes);
#: 4: the run catalog: tags, notes, archived_at, run references and the run table's denormalised columns
SCHEMA_VERSION = 4
BUSY_TIMEOUT_MS = 10_000
#: `interrupted`: stopped mid-run (Ctrl-C, or its process died with no worker around) with its last
#: checkpoint; ``resume_run`` queues it again
STATUSES = ("queued", "running", "interrupted", "done", "failed", "cancelled")
FINAL_STATUSES = ("done", "failed", "cancelled")

# The runs table, its short columns first: SQLite reads a row's columns in order, so the run table's columns must
# not sit behind a spec or a result that fills overflow pages (reading 1,000 runs' last columns took 20 ms, their
# first ones 2). Version 4 rebuilt the table in this order and added archived_at and the denormalised columns.
_RUNS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    group_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('queued','running','interrupted','done','failed','cancelled')),
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL,
    archived_at REAL,
    phase TEXT NOT NULL DEFAULT '',
    progress REAL NOT NULL DEFAULT 0,
    worker_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempt_token TEXT,
    dataset TEXT NOT NULL DEFAULT '',
    teacher_archs TEXT NOT NULL DEFAULT '[]',
    student_arch TEXT NOT NULL DEFAULT '',
    weighting TEXT NOT NULL DEFAULT '',
    method TEXT NOT NULL DEFAULT '',
    distillers TEXT NOT NULL DEFAULT '[]',
    n_paths INTEGER NOT NULL DEFAULT 0,
    seed INTEGER,
    final_acc REAL,
    best_acc REAL,
    best_epoch INTEGER,
    duration_s REAL,
    placement_json TEXT,
    error TEXT,
    result_json TEXT,
    spec_yaml TEXT NOT NULL
);
"""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
{runs_table}
CREATE INDEX IF NOT EXISTS runs_status ON runs(status, created_at);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    step INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    key TEXT NOT NULL,
    value REAL
);
CREATE INDEX IF NOT EXISTS metrics_run_key ON metrics(run_id, phase, key, step);
CREATE TABLE IF NOT EXISTS arrays (
    run_id TEXT NOT NULL,
    phase TEXT NOT NULL,
    step INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    key TEXT NOT NULL,
    dtype TEXT NOT NULL,
    shape TEXT NOT NULL,
    data BLOB NOT NULL,
    sample_index BLOB NOT NULL,
    columns TEXT
);
CREATE INDEX IF NOT EXISTS arrays_run_key ON arrays(run_id, key, step);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT,
    time REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    data_json TEXT
);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, id);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    params_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued','running','done','failed','cancelled')),
    progress REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    finished_at REAL,
    worker_id TEXT,
    error TEXT,
    result_json TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created_at);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    device TEXT NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    stopped_at REAL
);
CREATE TABLE IF NOT EXISTS run_tags (run_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (run_id, tag));
CREATE INDEX IF NOT EXISTS run_tags_tag ON run_tags(tag);
CREATE TABLE IF NOT EXISTS group_tags (group_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (group_id, tag));
CREATE TABLE IF NOT EXISTS notes (
    kind TEXT NOT NULL CHECK (kind IN ('run','group')),
    target_id TEXT NOT NULL,
    text TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (kind, target_id)
);
CREATE TABLE IF NOT EXISTS run_refs (run_id TEXT NOT NULL, ref_run_id TEXT NOT NULL, role TEXT NOT NULL,
                                     PRIMARY KEY (run_id, ref_run_id, role));
CREATE INDEX IF NOT EXISTS run_refs_ref ON run_refs(ref_run_id);
""".replace("{runs_table}", _RUNS_TABLE.format(name="runs"))
# Indexes for the run table's queries, on columns of version 4: created after the migration added them (an older
# runs table lacks them while _SCHEMA runs).
_V4_INDEXES = ("CREATE INDEX IF NOT EXISTS runs_created ON runs(created_at)",
               "CREATE INDEX IF NOT EXISTS runs_group ON runs(group_id, created_at)",
               "CREATE INDEX IF NOT EXISTS runs_archived ON runs(archived_at, created_at)")
#: tables holding rows of one run in a run_id column (deleting a run deletes its rows in each; notes and runs are
#: keyed otherwise)
RUN_ROW_TABLES = ("metrics", "arrays", "events", "jobs", "run_tags", "run_refs")

class WorkspaceError(RuntimeError):
    """The workspace folder or its database cannot be used; the message says why."""


def db_path(home: Path) -> Path:
    return home / "pathscope.db"


def init_workspace(home: Path | None = None) -> Path:
    """Create the folders, the schema and WAL mode (idempotent). Call before writers start."""
    home = Path(home) if home else workspace_home()
    try:
        for sub in ("runs", "teachers", "logs"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        probe = home / f".write-probe-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise WorkspaceError(
            f"workspace {home} is not writable ({err.strerror}); set PATHSCOPE_HOME to a writable folder"
        ) from None
    con = connect(db_path(home), readonly=False)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.executescript(_SCHEMA)
        # The version check and the migration share one write transaction: two workers starting together
        # migrate once.
        con.execute("BEGIN IMMEDIATE")
        found = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if found is None:
            con.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(found[0]) in (1, 2, 3):
            _migrate(con)
            con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
        elif int(found[0]) != SCHEMA_VERSION:
            raise WorkspaceError(
                f"{db_path(home)} has schema version {found[0]}, this PathScope reads version {SCHEMA_VERSION}"
            )
        for statement in _V4_INDEXES:
            con.execute(statement)
        con.commit()
    finally:
        con.close()
    return home


def _migrate(con: sqlite3.Connection) -> None:
    """Version 1, 2 or 3 -> 4, keeping every run: the runs table is rebuilt (SQLite changes a CHECK constraint, the
    `interrupted` status of version 2, and the order of columns only so) with the columns of versions 2 (the attempt
    token), 3 (placement_json) and 4 (the catalog's); then the catalog's columns are filled for every stored run from
    its spec and its metrics, so an old workspace lists its runs as a new one does."""
    old = [row[1] for row in con.execute("PRAGMA table_info(runs)")]
    con.execute(_RUNS_TABLE.format(name="runs_v4"))
    new = {row[1] for row in con.execute("PRAGMA table_info(runs_v4)")}
    kept = ", ".join(c for c in old if c in new)
    con.execute(f"INSERT INTO runs_v4 ({kept}) SELECT {kept} FROM runs")
    con.execute("DROP TABLE runs")
    con.execute("ALTER TABLE runs_v4 RENAME TO runs")
    con.execute("CREATE INDEX runs_status ON runs(status, created_at)")
    _backfill_catalog(con)


def _backfill_catalog(con: sqlite3.Connection) -> None:
    """Fill the spec and result columns and the references of every stored run."""
    spec_sql = ", ".join(f"{c}=?" for c in SPEC_COLUMNS)
    result_sql = ", ".join(f"{c}=?" for c in RESULT_COLUMNS)
    for run_id, spec_yaml, status, result_json, finished_at in con.execute(
            "SELECT id, spec_yaml, status, result_json, finished_at FROM runs").fetchall():
        summary = summarise_spec(spec_yaml)
        con.execute(f"UPDATE runs SET {spec_sql} WHERE id=?", (*summary.column_values(), run_id))
        write_refs(con, run_id, summary)
        if status in FINAL_STATUSES:
            con.execute(f"UPDATE runs SET {result_sql} WHERE id=?",
                        (*result_values(con, run_id, _result_or_none(result_json), finished_at), run_id))


def _result_or_none(result_json: str | None) -> dict | None:
    try:
        result = json.loads(result_json) if result_json else None
    except ValueError:  # a damaged row: the run is listed without its final accuracy
        return None
    return result if isinstance(result, dict) else None


def stored_version(con: sqlite3.Connection) -> int:
    """The schema version a workspace's database was last written with (0 before its meta table exists)."""
    try:
        found = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(found[0]) if found else 0


def connect(path: Path, readonly: bool) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    except sqlite3.OperationalError as err:
        raise WorkspaceError(f"cannot open {path}: {err}") from None
    try:  # connect() reads nothing: a damaged or foreign file shows only at the first read, checked here
        con.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as err:
        con.close()
        if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
            raise
        raise WorkspaceError(
            f"{path} is not a readable PathScope database ({err}): restore it from a backup, or move it aside "
            f"(rename it to {path.name}.broken) and PathScope starts an empty one; run folders under "
            f"{path.parent / 'runs'} are kept") from None
    con.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    con.row_factory = sqlite3.Row
    return con
