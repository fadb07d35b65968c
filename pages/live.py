"""Live: follow one run while it trains (status, progress, loss and accuracy curves, events)."""
from contextlib import closing
from pathlib import Path

import pandas as pd
import streamlit as st

from app import cached, charts
from app.queries import phases, spec_summary
from app.widgets import empty_state, run_picker, status_badge, user_errors
from app.worker_control import autostart_disabled, ensure_worker
from engine.store import FINAL_STATUSES, RunRow, Store

POLL_S = 2.0
PLOT_CONFIG = {"displaylogo": False}


def show_chart(fig, key: str) -> None:
    st.plotly_chart(fig, key=key, config=PLOT_CONFIG)


def cancel(home: str, run_id: str) -> None:
    with closing(Store(Path(home))) as store:
        store.request_cancel(run_id)
    st.rerun()


def run_header(home: str, run: RunRow) -> None:
    left, right = st.columns([4, 1], vertical_alignment="center")
    with left:
        st.subheader(run.name)
        status_badge(run.status)
    with right:
        if run.status in ("queued", "running"):
            if st.button("Cancel run", icon=":material/stop_circle:", disabled=bool(run.cancel_requested)):
                cancel(home, run.id)
    label = run.phase or run.status
    st.progress(min(max(run.progress, 0.0), 1.0), text=f"{label} · {run.progress:.0%}")
    if run.cancel_requested and run.status == "running":
        st.caption("Cancel requested: the run stops at the next step.")
    if run.status == "failed":
        st.error(f"The run failed: {run.error or 'no error message was recorded'}")


def worker_notice(home: str, run: RunRow) -> None:
    """A queued run with no live worker would wait forever: say so and offer to start one."""
    if run.status != "queued" or cached.live_worker_count(home) > 0:
        return
    st.warning("No worker is running, so this run waits in the queue. "
               "Start one here or with `python -m engine worker`.")
    if not autostart_disabled() and st.button("Start a worker", icon=":material/play_arrow:"):
        ensure_worker(Path(home))
        st.toast("Worker starting; it picks up the run in a few seconds.")


def result_metrics(run: RunRow) -> None:
    result = run.result
    cols = st.columns(4)
    for col, key, label in zip(cols, ("test_acc", "val_acc", "train_acc"), ("test acc", "val acc", "train acc")):
        if isinstance(result.get(key), (int, float)):
            col.metric(label, f"{100 * result[key]:.2f} %")
    if isinstance(result.get("seconds"), (int, float)):
        cols[3].metric("duration", f"{result['seconds']:.0f} s")


def phase_charts(metrics: pd.DataFrame, phase: str, path_ids: list[str], log_y: bool, run_id: str) -> None:
    data = metrics[metrics["phase"] == phase]
    left, right = st.columns(2)
    with left:
        show_chart(charts.loss_figure(data, path_ids, log_y), key=f"loss-{run_id}-{phase}")
    with right:
        show_chart(charts.accuracy_figure(data), key=f"acc-{run_id}-{phase}")
    if data["key"].str.startswith(charts.PATH_WEIGHT_PREFIX).any():
        # Every aggregator logs its weights; weight x loss shows what each path really adds to the total.
        left, right = st.columns(2)
        with left:
            show_chart(charts.weight_figure(data, path_ids), key=f"weights-{run_id}-{phase}")
        with right:
            show_chart(charts.weighted_loss_figure(data, path_ids, log_y), key=f"weighted-{run_id}-{phase}")


def curves(home: str, run: RunRow, log_y: bool) -> None:
    metrics = cached.metrics(home, run.id)
    found = phases(metrics)
    if not found:
        st.info("No metrics yet: the first losses appear a few steps after the worker starts the run.")
        return
    path_ids = spec_summary(run.spec_yaml)["path_ids"]
    if "main" in found:
        phase_charts(metrics, "main", path_ids, log_y, run.id)
    for phase in found:
        if phase.startswith("teacher:"):
            # Open while the teacher is what is training; folded away once the student starts.
            with st.expander(f"Teacher {phase.split(':', 1)[1]} (trained inline)", expanded="main" not in found):
                phase_charts(metrics, phase, [], log_y, run.id)


def run_panel(home: str, run_id: str, log_y: bool, was_active: bool) -> None:
    # A fragment rerun is called by Streamlit directly, outside the page's own error guard.
    with user_errors("Live"):
        run_view(home, run_id, log_y, was_active)


def run_view(home: str, run_id: str, log_y: bool, was_active: bool) -> None:
    run = cached.run(home, run_id)
    if run is None:
        st.error(f"Run {run_id} is no longer in the workspace.")
        return
    if was_active and run.status in FINAL_STATUSES:
        st.rerun()  # redraw the page so this fragment is rebuilt without polling
    run_header(home, run)
    worker_notice(home, run)
    result_metrics(run)
    curves(home, run, log_y)
    with st.expander("Recent events"):
        events = cached.events(home, run_id)
        if events.empty:
            st.caption("No events recorded yet.")
        else:
            st.dataframe(events, hide_index=True)


def main() -> None:
    st.title("Live")
    home = cached.home()
    runs = cached.runs(home)
    if runs.empty:
        empty_state()
        return
    run_id = run_picker(runs)
    log_y = st.toggle("Log-scale loss axis")
    run = cached.run(home, run_id)
    active = run is not None and run.status not in FINAL_STATUSES
    # Poll only while the run can still change; a finished run is drawn once.
    st.fragment(run_every=POLL_S if active else None)(run_panel)(home, run_id, log_y, active)


with user_errors("Live"):
    main()
