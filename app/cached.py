"""Page-layer reads: the ``app.queries`` functions behind a one-second cache.

The cache lets several widgets on a page (and a polling fragment) share one read of the
store per second instead of one each. Arguments are plain strings so they hash cheaply;
each call opens its own read-only connection, because SQLite connections must not be
shared between the script threads of different sessions.
"""
from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pandas as pd
import streamlit as st

from app import queries, worker_control
from app.cluster import ClusterSummary, cluster_summary
from app.run_series import RunSeries
from app.samples import SampleImages
from engine.ablation import AblationRow, ablation_progress, ablation_table, group_id_of
from engine.data import load_dataset
from engine.spec import DatasetSpec
from engine.store import RunRow, Store, db_path, mark_orphaned_runs, workspace_home

TTL_S = 1.0


def home() -> str:
    """The workspace folder (env PATHSCOPE_HOME), as the cache key string."""
    return str(workspace_home())


def workspace_exists(home_dir: str) -> bool:
    # A missing database is the normal empty state, not an error: nothing was submitted yet.
    return db_path(Path(home_dir)).exists()


def _reader(home_dir: str) -> closing[Store]:
    return closing(Store(Path(home_dir), readonly=True))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def runs(home_dir: str) -> pd.DataFrame:
    if not workspace_exists(home_dir):
        return pd.DataFrame(columns=queries.RUN_COLUMNS)
    # The run list is where a run left `running` by a dead process would mislead: it is marked interrupted
    # first (the read side's only write, at most once a second, and none in a read-only workspace).
    mark_orphaned_runs(Path(home_dir))
    with _reader(home_dir) as store:
        return queries.runs_frame(store)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def run(home_dir: str, run_id: str) -> RunRow | None:
    if not workspace_exists(home_dir):
        return None
    with _reader(home_dir) as store:
        return store.get_run(run_id)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def metrics(home_dir: str, run_id: str) -> pd.DataFrame:
    with _reader(home_dir) as store:
        return queries.run_metrics(store, run_id)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def phase_metrics(home_dir: str, run_id: str, phase: str, version: str = "") -> pd.DataFrame:
    """One phase of a run's metrics. ``version`` names the state of whatever writes that phase (a job's id
    and status): when it changes the read is fresh, so a job that just finished never shows stale rows."""
    with _reader(home_dir) as store:
        return queries.run_metrics(store, run_id, phase=phase)


# Kept across reruns and sessions: a run's series are read whole once, then only their new rows.
@st.cache_resource(max_entries=4, show_spinner=False)
def _run_series(home_dir: str, run_id: str) -> RunSeries:
    return RunSeries()


def run_series(home_dir: str, run: RunRow) -> RunSeries:
    """The run's metric series, topped up with what was logged since any session last asked."""
    series = _run_series(home_dir, run.id)
    with _reader(home_dir) as store:
        series.refresh(store, run.id, run.attempts)
    return series


@st.cache_data(ttl=TTL_S, show_spinner=False)
def metric_keys(home_dir: str, run_ids: tuple[str, ...]) -> list[str]:
    with _reader(home_dir) as store:
        return queries.metric_keys(store, list(run_ids))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def metric_of_runs(home_dir: str, run_ids: tuple[str, ...], key: str) -> pd.DataFrame:
    with _reader(home_dir) as store:
        return queries.metric_of_runs(store, list(run_ids), key)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def events(home_dir: str, run_id: str) -> pd.DataFrame:
    with _reader(home_dir) as store:
        return queries.run_events(store, run_id)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def teacher_accuracies(home_dir: str, run_id: str) -> dict[str, dict]:
    with _reader(home_dir) as store:
        return queries.teacher_accuracies(store, run_id)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def cluster(home_dir: str) -> ClusterSummary:
    if not workspace_exists(home_dir):
        return ClusterSummary()
    with _reader(home_dir) as store:
        return cluster_summary(store)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def live_worker_count(home_dir: str) -> int:
    if not workspace_exists(home_dir):
        return 0
    return worker_control.live_worker_count(Path(home_dir))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def array_keys(home_dir: str, run_id: str) -> list[str]:
    if not workspace_exists(home_dir):
        return []
    with _reader(home_dir) as store:
        return queries.array_keys(store, run_id)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def array_frame(home_dir: str, run_id: str, key: str, phase: str = queries.MAIN_PHASE) -> pd.DataFrame:
    with _reader(home_dir) as store:
        return queries.array_frame(store, run_id, key, phase)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def labelled_array_frame(home_dir: str, run_id: str, key: str) -> pd.DataFrame:
    with _reader(home_dir) as store:
        return queries.labelled_array_frame(store, run_id, key)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def ablation(home_dir: str, run_id: str, tolerance: float) -> tuple[list[AblationRow], int, int] | None:
    """The run's ablation rows, runs done and runs in total; None when no ablation was submitted."""
    with _reader(home_dir) as store:
        if not store.list_runs(group_id=group_id_of(run_id)):
            return None
        return ablation_table(store, run_id, tolerance), *ablation_progress(store, run_id)


# A dataset is large and never changes: kept across reruns and sessions, at most two at once.
@st.cache_resource(max_entries=2, show_spinner="Loading the run's dataset for the sample images…")
def sample_images(dataset_json: str) -> SampleImages:
    """The pictures of a dataset spec (JSON); never downloads. Raises what ``load_dataset`` raises."""
    spec = DatasetSpec.model_validate_json(dataset_json).model_copy(update={"download": False})
    return SampleImages.from_bundle(load_dataset(spec))
