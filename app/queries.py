"""Read-only queries on the run store, returning pandas DataFrames.

Pure functions of a ``Store`` (opened with ``readonly=True`` by the pages): no Streamlit,
no caching here. Pages wrap them in short-lived caches (see ``app.cached``).
"""
from __future__ import annotations

import copy
import json
import sqlite3
import time
from contextlib import closing
from datetime import datetime
from functools import lru_cache
from itertools import groupby
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml

from engine import catalog
from engine.spec import SpecError, migrate_spec_data, parse_spec, printable
from engine.store import ACTIVE_STATUSES, RunRow, Store
from engine.vocabulary import LABELS_KEY, MAIN_PHASE  # noqa: F401  (pages read them from here too)

METRIC_COLUMNS = ["phase", "step", "epoch", "key", "value"]
EVENT_COLUMNS = ["time", "level", "message"]
RUN_COLUMNS = [
    "id", "name", "group_id", "status", "phase", "progress", "error", "label", "created", "duration_s",
    "dataset", "student", "combination", "n_paths", "path_ids", "test_acc_pct", "val_acc_pct", "runs_on", "archived",
]
# Index levels of an array frame: one row per recorded sample (sample -1: a row of no sample).
ARRAY_LEVELS = ["step", "epoch", "sample"]
# (phase, key) -> (steps, epochs, values) in step order, as ``metric_series_since`` returns them.
SeriesArrays = dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray]]
# The first read of a long run takes about this many logged steps per series (``metric_series_first``): as many
# as a chart draws of one series (charts.MAX_POINTS).
FIRST_READ_POINTS = 2000


# libyaml's parser where PyYAML was built with it: about ten times faster than the pure-Python one.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def spec_summary(spec_yaml: str) -> dict[str, Any]:
    """The fields tables show, read leniently from a stored spec.

    Plain YAML, so a run stored by an older PathScope is still listed even if its spec no longer
    validates; its combination ("uncertainty", "amtml · fixed") comes from ``parse_spec``, which
    migrates version-1 specs. A stored spec never changes, so each is parsed once per process
    (every page lists every run once a second); callers get a copy.
    """
    return copy.deepcopy(_spec_summary(spec_yaml))


@lru_cache(maxsize=1024)
def _spec_summary(spec_yaml: str) -> dict[str, Any]:
    try:
        data = yaml.load(spec_yaml, Loader=_YAML_LOADER)
    except yaml.YAMLError:
        data = None
    data = data if isinstance(data, dict) else {}

    def section(name: str) -> dict[str, Any]:
        value = data.get(name)
        return value if isinstance(value, dict) else {}

    def items(name: str) -> list[dict[str, Any]]:
        value = data.get(name)
        return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []

    paths = items("paths")
    return {
        "dataset": section("dataset").get("name", "?"),
        "student": section("student").get("arch", "?"),
        "combination": combination(data),
        "n_paths": sum(1 for p in paths if p.get("enabled", True)),
        "nproc": section("distributed").get("nproc", 1),
        "path_ids": [str(p.get("id")) for p in paths],
        "teacher_ids": [str(t.get("id")) for t in items("teachers")],
    }


def combination(data: dict[str, Any]) -> str:
    """The spec's ``combination`` label; for a spec that no longer validates, the same label from its
    (migrated) weighting and method names, or "?"."""
    try:
        return parse_spec(data).combination
    except SpecError:
        migrated = migrate_spec_data(data)
    names = [part.get("name") for part in (migrated.get("method"), migrated.get("weighting")) if isinstance(part, dict)]
    return " · ".join(str(n) for n in names if n) or "?"


def run_label(run: RunRow) -> str:
    return f"{printable(run.name)} · {run.id} · {run.status}"


def placement_label(run: RunRow) -> str:
    """Where the run executes, e.g. "ray · node-2 (10.0.0.2) · cuda:0" or "local · laptop · cpu · 2 processes (DDP)";
    a Ray run before its trial started: "ray · waiting for a slot on 10.0.0.1:6379"; "" before any executor placed it
    (queued, or a run of before placements were recorded)."""
    placement = run.placement
    if not placement:
        return ""
    executor = str(placement.get("executor", "local"))
    if not placement.get("node"):
        address = placement.get("address")
        where = f" on {address}" if address and address != "local" else ""
        return f"{executor} · waiting for a slot{where}" if executor == "ray" else executor
    node = str(placement["node"])
    if placement.get("ip") and placement.get("ip") != node:
        node = f"{node} ({placement['ip']})"
    parts = [executor, node, str(placement.get("devices") or "?")]
    nproc = _spec_summary(run.spec_yaml)["nproc"]
    if isinstance(nproc, int) and nproc > 1:
        parts.append(f"{nproc} processes (DDP)")
    return " · ".join(parts)


def run_duration(run: RunRow, now: float | None = None) -> float | None:
    """Seconds the run has trained so far (or in total once finished)."""
    seconds = run.result.get("seconds")
    if seconds is not None:
        return float(seconds)
    if run.started_at is None:
        return None
    end = run.finished_at if run.finished_at is not None else (now or time.time())
    return end - run.started_at


def _percent(value: Any) -> float | None:
    return round(100.0 * float(value), 2) if isinstance(value, (int, float)) else None


def run_record(run: RunRow, archived: bool = False) -> dict[str, Any]:
    result = run.result
    return {
        "id": run.id, "name": printable(run.name), "group_id": run.group_id, "status": run.status, "phase": run.phase,
        "progress": run.progress, "error": run.error, "label": run_label(run),
        "created": datetime.fromtimestamp(run.created_at),
        "duration_s": run_duration(run),
        **spec_summary(run.spec_yaml),
        "test_acc_pct": _percent(result.get("test_acc")),
        "val_acc_pct": _percent(result.get("val_acc")),
        "runs_on": placement_label(run), "archived": archived,
    }


def runs_frame(store: Store) -> pd.DataFrame:
    """One row per run, newest first, archived ones too (their "archived" column is true)."""
    archived = catalog.archived_ids(store)
    records = [run_record(run, run.id in archived) for run in store.list_runs()]
    return pd.DataFrame.from_records(records, columns=RUN_COLUMNS)


def run_metrics(store: Store, run_id: str, phase: str | None = None) -> pd.DataFrame:
    """A run's metrics in long format (phase, step, epoch, key, value), sorted by phase, key, step."""
    rows = store.metrics(run_id, phase=phase)
    return pd.DataFrame([tuple(r) for r in rows], columns=METRIC_COLUMNS)


def metric_keys(store: Store, run_ids: list[str], phase: str = MAIN_PHASE) -> list[str]:
    """Every key any of the runs logged in ``phase``, sorted."""
    return sorted({key for run_id in run_ids for key in store.metric_keys(run_id, phase)})


def metric_of_runs(store: Store, run_ids: list[str], key: str, phase: str = MAIN_PHASE) -> pd.DataFrame:
    """One key of several runs (run_id, phase, step, epoch, key, value): what an overlay draws, without reading
    the runs' other rows (a long run logs about a million)."""
    frames = [pd.DataFrame([tuple(r) for r in store.metrics(run_id, keys=[key], phase=phase)],
                           columns=METRIC_COLUMNS).assign(run_id=run_id) for run_id in run_ids]
    return pd.concat(frames, ignore_index=True)[["run_id", *METRIC_COLUMNS]] if frames else pd.DataFrame(
        columns=["run_id", *METRIC_COLUMNS])


def metrics_csv(home: str | Path, run_ids: list[str]) -> str:
    """Every metric of the runs as CSV (run_id, phase, step, epoch, key, value): built when a download asks."""
    with closing(Store(Path(home), readonly=True)) as store:
        return metrics_long(store, run_ids).to_csv(index=False)


def metrics_long(store: Store, run_ids: list[str]) -> pd.DataFrame:
    """Metrics of several runs with a leading run_id column (the CSV export format)."""
    frames = [run_metrics(store, run_id).assign(run_id=run_id) for run_id in run_ids]
    columns = ["run_id", *METRIC_COLUMNS]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def run_events(store: Store, run_id: str, limit: int = 50) -> pd.DataFrame:
    """The run's latest events, newest first."""
    rows = store.events(run_id)[-limit:]
    records = [(datetime.fromtimestamp(r["time"]), r["level"], r["message"]) for r in reversed(rows)]
    return pd.DataFrame(records, columns=EVENT_COLUMNS)


def teacher_accuracies(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """Each teacher's measured test accuracy ({"test_acc", "test_samples"}), from the run's teacher events."""
    found = {}
    for row in store.events(run_id):
        data = json.loads(row["data_json"]) if row["data_json"] else {}
        if isinstance(data, dict) and "teacher" in data and isinstance(data.get("test_acc"), (int, float)):
            found[str(data["teacher"])] = {"test_acc": float(data["test_acc"]), "test_samples": data.get("test_samples")}
    return found


def phases(names: Iterable[str]) -> list[str]:
    """The distinct phases among ``names``: the main phase first, then the inline teachers in name order."""
    found = set(names)
    return [p for p in [MAIN_PHASE] if p in found] + sorted(found - {MAIN_PHASE})


def metric_series_since(store: Store, run_id: str, after_rowid: int) -> tuple[SeriesArrays, int]:
    """The run's metrics stored after row ``after_rowid`` (0: all of them), per series, and the row id to pass next.

    Rows are only ever appended while an attempt runs, so the row id is a watermark: polling with it
    reads just what was logged since. Reads stop at the table's newest row id when the call starts,
    so rows written meanwhile are left whole to the next call (none is read twice).
    """
    cursor = _plain_cursor(store)
    newest = _newest_rowid(cursor)
    if after_rowid == 0:
        return {name: _series_rows(cursor, run_id, name, newest) for name in _series_names(cursor, run_id)}, newest
    # "+run_id" keeps SQLite off the run_id index: a row-id range scan touches only the new rows,
    # where the index would walk every row the run ever logged (about 0.4 s for 1.3 million).
    rows = cursor.execute("SELECT phase, key, step, epoch, value FROM metrics WHERE rowid > ? AND rowid <= ?"
                          " AND +run_id = ? ORDER BY phase, key, step", (after_rowid, newest, run_id)).fetchall()
    return {name: _arrays([r[2:] for r in group]) for name, group in groupby(rows, key=lambda r: (r[0], r[1]))}, newest


def metric_series_first(store: Store, run_id: str, points: int = FIRST_READ_POINTS) -> tuple[SeriesArrays, int]:
    """The run's series as a first look at it needs them, and the row id to pass ``metric_series_since`` next.

    A series of up to ``points`` rows is read whole. A longer one logged at a regular step interval is read
    at every k-th logged step (k chosen so about ``points`` remain) and at its last step, so series logged at
    the same steps keep the same steps, which the weighted-loss stack needs. A long irregular one (system
    metrics sampled by time) is read whole. Of 8 paths x 50,000 logged steps (1.35 million rows) this reads
    54,000 rows, and polls then add every new row.
    """
    cursor = _plain_cursor(store)
    newest = _newest_rowid(cursor)
    found = {}
    for name in _series_names(cursor, run_id):
        stride = _stride(cursor, run_id, name, newest, points)
        found[name] = _series_rows(cursor, run_id, name, newest, stride)
    return {name: arrays for name, arrays in found.items() if len(arrays[0])}, newest


def _plain_cursor(store: Store) -> sqlite3.Cursor:
    """A cursor returning plain tuples: sqlite3.Row objects cost several times more per row to make and convert."""
    cursor = store.con.cursor()
    cursor.row_factory = None
    return cursor


def _newest_rowid(cursor: sqlite3.Cursor) -> int:
    return cursor.execute("SELECT max(rowid) FROM metrics").fetchone()[0] or 0


def _series_names(cursor: sqlite3.Cursor, run_id: str) -> list[tuple[str, str]]:
    """The run's (phase, key) pairs, found by jumping along the (run_id, phase, key, step) index from one pair to
    the next: a few dozen lookups, where SELECT DISTINCT walks every row the run logged."""
    names: list[tuple[str, str]] = []
    phase = ""
    while (phase := _next_value(cursor, "phase", "run_id = ? AND phase > ?", (run_id, phase))) is not None:
        key = ""
        while (key := _next_value(cursor, "key", "run_id = ? AND phase = ? AND key > ?", (run_id, phase, key))) \
                is not None:
            names.append((phase, key))
    return names


def _next_value(cursor: sqlite3.Cursor, column: str, where: str, args: tuple) -> Any:
    return cursor.execute(f"SELECT min({column}) FROM metrics WHERE {where}", args).fetchone()[0]


_SERIES = "FROM metrics WHERE run_id = ? AND phase = ? AND key = ? AND rowid <= ?"


def _stride(cursor: sqlite3.Cursor, run_id: str, name: tuple[str, str], newest: int, points: int
            ) -> tuple[int, int, int] | None:
    """(first step, k x the logging interval, last step) to read a long regular series at; None: read it whole."""
    args = (run_id, *name, newest)
    count = cursor.execute(f"SELECT count(*) FROM (SELECT 1 {_SERIES} LIMIT ?)", (*args, points + 1)).fetchone()[0]
    if count <= points:
        return None
    head = np.array([r[0] for r in cursor.execute(f"SELECT step {_SERIES} ORDER BY step LIMIT 64", args)])
    gaps = np.diff(head)
    if len(gaps) == 0 or gaps[0] <= 0 or (gaps != gaps[0]).any():
        return None
    last = cursor.execute(f"SELECT step {_SERIES} ORDER BY step DESC LIMIT 1", args).fetchone()[0]
    logged = (last - head[0]) // gaps[0] + 1
    return int(head[0]), int(gaps[0]) * -(-int(logged) // points), int(last)


def _series_rows(cursor: sqlite3.Cursor, run_id: str, name: tuple[str, str], newest: int,
                 stride: tuple[int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # One query per series returns plain numbers, which numpy converts far faster than mixed rows.
    if stride is None:
        rows = cursor.execute(f"SELECT step, epoch, value {_SERIES} ORDER BY step", (run_id, *name, newest))
    else:
        # Bounded by the last step instead of the row id: a series is logged in step order, so this is the same
        # bound, and one on the index's own columns, where a row-id test doubles the time of the scan.
        first, every, last = stride
        rows = cursor.execute("SELECT step, epoch, value FROM metrics WHERE run_id = ? AND phase = ? AND key = ?"
                              " AND step <= ? AND ((step - ?) % ? = 0 OR step = ?) ORDER BY step",
                              (run_id, *name, last, first, every, last))
    return _arrays(rows.fetchall())


def _arrays(rows: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, epochs, values) of (step, epoch, value) rows; a NULL value becomes NaN."""
    table = np.array(rows, dtype=float).reshape(-1, 3)
    return table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2]


# ---------------------------------------------------------------- telemetry arrays
def array_keys(store: Store, run_id: str) -> list[str]:
    return store.array_keys(run_id)


def array_frame(store: Store, run_id: str, key: str, phase: str | None = MAIN_PHASE) -> pd.DataFrame:
    """Every recording of array ``key``: index (step, epoch, sample), one column per array column.

    Rows of all recorded steps are stacked, so per-step views are ``groupby(level="step")``.
    Arrays without column names get "0", "1", ...; a 1-D array (labels) has one column "value".
    """
    frames = []
    for stored in store.arrays(run_id, key, phase=phase):
        values = stored.values.reshape(len(stored.index), -1).astype(float)
        columns = stored.columns or ([str(i) for i in range(values.shape[1])] if stored.values.ndim > 1 else ["value"])
        index = pd.MultiIndex.from_arrays(
            [np.full(len(stored.index), stored.step), np.full(len(stored.index), stored.epoch), stored.index],
            names=ARRAY_LEVELS,
        )
        frames.append(pd.DataFrame(values, index=index, columns=columns))
    if not frames:
        return pd.DataFrame(index=pd.MultiIndex.from_arrays([[], [], []], names=ARRAY_LEVELS))
    return pd.concat(frames)


def labelled_array_frame(store: Store, run_id: str, key: str, phase: str = MAIN_PHASE) -> pd.DataFrame:
    """``array_frame`` with a fourth index level "label": each sample's class, from the "labels"
    array recorded at the same step (-1 where none was recorded), for the per-class views."""
    frame = array_frame(store, run_id, key, phase)
    labels = array_frame(store, run_id, LABELS_KEY, phase)
    # Joined on (step, sample) rather than by position: it holds even if an engine reorders rows.
    label = labels["value"].droplevel("epoch") if not labels.empty else pd.Series(dtype=float)
    label = label[~label.index.duplicated(keep="last")]
    keys = pd.MultiIndex.from_arrays([frame.index.get_level_values("step"), frame.index.get_level_values("sample")])
    found = label.reindex(keys).fillna(-1).astype(int).to_numpy() if len(frame) else np.array([], dtype=int)
    return frame.set_index(pd.Index(found, name="label"), append=True)


# ---------------------------------------------------------------- comparisons
def combination_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Final test accuracy (%) per combination (the weighting, with the path method if any) over ``runs``:
    runs finished / pending, mean, std, min, max.

    std is the sample standard deviation (n - 1), NaN for a single run: one seed says nothing about spread.
    Only runs that finished with a test accuracy count; queued and running ones are counted as pending.
    """
    done = runs[(runs["status"] == "done") & runs["test_acc_pct"].notna()]
    pending = runs[runs["status"].isin(ACTIVE_STATUSES)]
    stats = done.groupby("combination")["test_acc_pct"].agg(["count", "mean", "std", "min", "max"])
    summary = pd.DataFrame(index=pd.Index(sorted(set(runs["combination"])), name="combination"))
    summary = summary.join(stats).rename(columns={"count": "finished"})
    summary["finished"] = summary["finished"].fillna(0).astype(int)
    summary["pending"] = pending.groupby("combination").size().reindex(summary.index, fill_value=0)
    return summary.reset_index()[["combination", "finished", "pending", "mean", "std", "min", "max"]]
