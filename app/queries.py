"""Read-only queries on the run store, returning pandas DataFrames.

Pure functions of a ``Store`` (opened with ``readonly=True`` by the pages): no Streamlit,
no caching here. Pages wrap them in short-lived caches (see ``app.cached``).
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pandas as pd
import yaml

from engine.store import RunRow, Store

METRIC_COLUMNS = ["phase", "step", "epoch", "key", "value"]
EVENT_COLUMNS = ["time", "level", "message"]
RUN_COLUMNS = [
    "id", "name", "status", "phase", "progress", "error", "label", "created", "duration_s",
    "dataset", "student", "aggregator", "n_paths", "path_ids", "test_acc_pct", "val_acc_pct",
]


def spec_summary(spec_yaml: str) -> dict[str, Any]:
    """The fields tables show, read leniently from a stored spec.

    Plain YAML rather than ``parse_spec``: a run stored by an older PathScope must still
    be listed even if its spec no longer validates.
    """
    try:
        data = yaml.safe_load(spec_yaml)
    except yaml.YAMLError:
        data = None
    data = data if isinstance(data, dict) else {}

    def section(name: str) -> dict[str, Any]:
        value = data.get(name)
        return value if isinstance(value, dict) else {}

    paths = data.get("paths") if isinstance(data.get("paths"), list) else []
    active = [p for p in paths if isinstance(p, dict) and p.get("enabled", True)]
    return {
        "dataset": section("dataset").get("name", "?"),
        "student": section("student").get("arch", "?"),
        "aggregator": section("aggregator").get("name", "?"),
        "n_paths": len(active),
        "path_ids": [str(p.get("id")) for p in paths if isinstance(p, dict)],
    }


def run_label(run: RunRow) -> str:
    return f"{run.name} · {run.id} · {run.status}"


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


def run_record(run: RunRow) -> dict[str, Any]:
    result = run.result
    return {
        "id": run.id, "name": run.name, "status": run.status, "phase": run.phase,
        "progress": run.progress, "error": run.error, "label": run_label(run),
        "created": datetime.fromtimestamp(run.created_at),
        "duration_s": run_duration(run),
        **spec_summary(run.spec_yaml),
        "test_acc_pct": _percent(result.get("test_acc")),
        "val_acc_pct": _percent(result.get("val_acc")),
    }


def runs_frame(store: Store) -> pd.DataFrame:
    """One row per run, newest first."""
    records = [run_record(run) for run in store.list_runs()]
    return pd.DataFrame.from_records(records, columns=RUN_COLUMNS)


def run_metrics(store: Store, run_id: str, phase: str | None = None) -> pd.DataFrame:
    """A run's metrics in long format (phase, step, epoch, key, value), sorted by phase, key, step."""
    rows = store.metrics(run_id, phase=phase)
    return pd.DataFrame([tuple(r) for r in rows], columns=METRIC_COLUMNS)


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


def phases(metrics: pd.DataFrame) -> list[str]:
    """Phases present: "main" first, then the inline teachers in name order."""
    found = set(metrics["phase"].unique())
    return [p for p in ["main"] if p in found] + sorted(found - {"main"})
