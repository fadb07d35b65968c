"""The run store: one SQLite database (WAL mode) plus an artifacts folder per run.

Layout of a workspace (env PATHSCOPE_HOME, default ./workspace):
    pathscope.db            runs, metrics, events, workers, arrays, tags, notes (schema versioned in `meta`)
    runs/<run_id>/          spec.yaml, checkpoints/, arrays/, logs
    teachers/               teachers trained inline, cached by recipe hash
    logs/worker-<pid>.log   worker output when started by the dashboard

``schema`` creates and migrates the database, ``columns`` works out the run table's denormalised fields, ``rows``
holds what reads return, ``store`` reads and writes it. Callers import every name from here.
"""
from engine.store.schema import (
    BUSY_TIMEOUT_MS, FINAL_STATUSES, RUN_ROW_TABLES, SCHEMA_VERSION, STATUSES, WorkspaceError, db_path, init_workspace,
)
from engine.store.rows import RUN_ID_PATTERN, JobRow, RunRow, StoredArray, is_run_id, new_run_id
from engine.store.store import ACTIVE_STATUSES, RESUMABLE_STATUSES, STALE_AFTER_SECONDS, Store, mark_orphaned_runs
from engine.workspace import run_dir, workspace_home

__all__ = [
    "ACTIVE_STATUSES", "BUSY_TIMEOUT_MS", "FINAL_STATUSES", "JobRow", "RESUMABLE_STATUSES", "RUN_ID_PATTERN",
    "RUN_ROW_TABLES", "RunRow", "SCHEMA_VERSION", "STALE_AFTER_SECONDS", "STATUSES", "Store", "StoredArray",
    "WorkspaceError", "db_path", "init_workspace", "is_run_id", "mark_orphaned_runs", "new_run_id", "run_dir",
    "workspace_home",
]
