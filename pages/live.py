"""Live: follow one run while it trains (status, progress, loss and accuracy curves, throughput, system use,
events)."""

import pandas as pd
import streamlit as st

from app import cached, charts
from app.queries import placement_label, spec_summary
from app.run_series import RunSeries
from app.terms import term_label
from app.widgets import (
    download_report, download_student, empty_state, picker_runs, run_picker, smoothing_picker, status_badge,
    user_errors,
)
from app.worker_control import autostart_disabled
from app.writes import cancel_run, resume_run, start_worker
from engine.spec import printable
from engine.store import ACTIVE_STATUSES, RESUMABLE_STATUSES, RunRow
from engine.vocabulary import GPU_KEYS, MAIN_PHASE, is_teacher_phase, teacher_of_phase

POLL_S = 2.0
PLOT_CONFIG = {"displaylogo": False}
NO_TIMING = ("No step timing in this phase: runs log time/* and samples/s since PathScope's teacher-output "
             "cache; older runs have none.")
NO_SYSTEM = ("No system metrics in this phase: runs started before PathScope sampled CPU, memory and GPU use "
             "have none.")


def show_chart(spec: dict, key: str) -> None:
    """A chart of ``charts.live_figures``: a plain dict, drawn without plotly's validation (see charts.unvalidated)."""
    st.plotly_chart(charts.unvalidated(spec), key=key, config=PLOT_CONFIG)


def cancel(home: str, run_id: str) -> None:
    cancel_run(home, run_id)
    st.rerun()


def resume(home: str, run_id: str) -> None:
    if not resume_run(home, run_id):
        st.warning("The run is no longer interrupted or failed: nothing to resume.")
    st.rerun()


def run_header(home: str, run: RunRow) -> None:
    left, right = st.columns([4, 1], vertical_alignment="center")
    with left:
        st.subheader(printable(run.name), anchor=False)
        status_badge(run.status)
        summary = spec_summary(run.spec_yaml)
        st.caption(f"{summary['combination']} · {summary['n_paths']} path(s) · student {summary['student']}",
                   help="the path method · the weighting (just the weighting when the paths use their distillers)")
        where = placement_label(run)
        if where:
            st.caption(f"Runs on {where}", help="executor · node · devices")
    with right:
        if run.status in ACTIVE_STATUSES:
            if st.button("Cancel run", icon=":material/stop_circle:", disabled=bool(run.cancel_requested)):
                cancel(home, run.id)
        elif run.status in RESUMABLE_STATUSES:
            if st.button("Resume run", icon=":material/replay:",
                         help="Queue it again: it continues from its last checkpoint"):
                resume(home, run.id)
    label = run.phase or run.status
    st.progress(min(max(run.progress, 0.0), 1.0), text=f"{label} · {run.progress:.0%}")
    if run.cancel_requested and run.status == "running":
        st.caption("Cancel requested: the run stops at the next step.")
    if run.status == "failed":
        st.error(f"The run failed: {run.error or 'no error message was recorded'}")
    if run.status == "interrupted":
        st.warning("The run was interrupted (stopped, or its process died) and keeps its last checkpoint: "
                   "*Resume run* continues from there (or `python -m engine resume " + run.id + "`).")


def worker_notice(home: str, run: RunRow) -> None:
    """A queued run with no live worker would wait forever: say so and offer to start one."""
    if run.status != "queued" or cached.live_worker_count(home) > 0:
        return
    st.warning("No worker is running, so this run waits in the queue. "
               "Start one here or with `python -m engine worker`.")
    if not autostart_disabled() and st.button("Start a worker", icon=":material/play_arrow:"):
        start_worker(home)
        st.toast("Worker starting; it picks up the run in a few seconds.")


def result_metrics(home: str, run: RunRow) -> None:
    result = run.result
    cols = st.columns(5)
    for col, key, label in zip(cols, ("test_acc", "val_acc", "train_acc"), ("test acc", "val acc", "train acc")):
        if isinstance(result.get(key), (int, float)):
            col.metric(label, f"{100 * result[key]:.2f} %")
    if isinstance(result.get("seconds"), (int, float)):
        cols[3].metric("duration", f"{result['seconds']:.0f} s")
    with cols[4]:
        download_student(home, run, key=f"live-download-{run.id}")
    download_report(home, run.id, key=f"live-report-{run.id}")


def teacher_metrics(home: str, run: RunRow) -> None:
    """Each teacher's test accuracy, as soon as the worker has measured it (before the student trains)."""
    accuracies = cached.teacher_accuracies(home, run.id)
    if not accuracies:
        return
    cols = st.columns(min(len(accuracies), 5))
    for n, (tid, found) in enumerate(accuracies.items()):
        samples = found.get("test_samples")
        cols[n % len(cols)].metric(f"teacher {tid} · test acc", f"{100 * found['test_acc']:.2f} %",
                                   help=f"measured on {samples:,} test images" if samples else None)


def throughput_panel(series: RunSeries, phase: str, figure: dict | None, key: str) -> None:
    """Samples per second, the time of a step, and the share of it each section takes."""
    if figure is None:
        st.caption(NO_TIMING)
        return
    left, right = st.columns([1, 3])
    with left:
        samples = series.latest(phase, charts.THROUGHPUT_KEY)
        if samples is not None:
            st.metric("samples/s", f"{samples:,.0f}", help="training samples per second since the previous log")
        sections = [series.latest(phase, charts.TIME_PREFIX + s) for s in charts.TIME_SECTIONS]
        st.metric("step time", f"{sum(t for t in sections if t is not None):.1f} ms",
                  help="milliseconds per step, summed over the sections on the right (latest log)")
    with right:
        show_chart(figure, key=key)


def phase_charts(series: RunSeries, phase: str, path_ids: list[str], log_y: bool, smoothing: int,
                 run: RunRow) -> None:
    run_id = run.id
    frame = series.display_frame(phase, smoothing)
    figures = charts.live_figures(frame, path_ids, log_y)
    left, right = st.columns(2)
    with left:
        show_chart(figures["loss"], key=f"loss-{run_id}-{phase}")
        if log_y and (hidden := charts.negative_terms(frame, charts.LOSS_PREFIX)):
            st.caption(f"{', '.join(map(term_label, hidden))}: below zero, not drawn on the log axis; turn "
                       f"the log scale off to see it.")
    with right:
        show_chart(figures["accuracy"], key=f"acc-{run_id}-{phase}")
    if "weights" in figures:
        # Every run logs each term's weight; weight x loss shows what each term really adds to the total.
        left, right = st.columns(2)
        with left:
            show_chart(figures["weights"], key=f"weights-{run_id}-{phase}")
        with right:
            show_chart(figures["weighted"], key=f"weighted-{run_id}-{phase}")
            st.caption(stack_note(frame))
    throughput_panel(series, phase, figures.get("step_time"), key=f"time-{run_id}-{phase}")
    system_panel(frame, figures, placement_device(run), key=f"system-{run_id}-{phase}")


def placement_device(run: RunRow) -> str:
    """The devices the run trains on, as its worker recorded them ("cpu", "cuda:0"; "" before it started)."""
    return str((run.placement or {}).get("devices", ""))


def no_gpu_note(device: str) -> str:
    """Why a run that logged system metrics has no GPU ones."""
    if device.startswith("cuda"):
        return (f"No GPU metrics: the run trains on {device}, but its worker could not read NVML "
                "(the nvidia-ml-py package or the NVIDIA driver is missing).")
    return f"No GPU metrics: the run trains on the CPU{f' ({device})' if device else ''}."


def system_panel(frame: pd.DataFrame, figures: dict[str, dict], device: str, key: str) -> None:
    """The training process's CPU and memory, the machine's memory and, on a GPU, its utilisation and memory."""
    st.markdown("**System**")
    shown = [name for name in charts.SYSTEM_CHARTS if name in figures]
    if not shown:
        st.caption(NO_SYSTEM)
        return
    if not frame["key"].isin(GPU_KEYS).any():
        st.caption(no_gpu_note(device))
    for column, name in zip(st.columns(2), shown):
        with column:
            show_chart(figures[name], key=f"{key}-{name}")


def stack_note(frame: pd.DataFrame) -> str:
    """What the stacked chart adds up to: the total loss, unless the run predates named terms."""
    if (frame["key"] == charts.WEIGHTED_TERM_PREFIX + charts.TASK).any():
        below = ", ".join(term_label(name) for name in charts.negative_terms(frame))
        if below:
            return (f"Each band is one term's weight × its raw loss. {below} goes below zero, and what falls below "
                    f"is stacked downwards from zero: the total loss the student is trained on (the dashed line, as "
                    f"logged) is the top of the upper bands less the depth of the lower ones.")
        return ("Each band is one term's weight × its raw loss; stacked, the bands add up to the total loss "
                "the student is trained on (the dashed line, as logged).")
    return ("This run logged only its paths' weights (PathScope before named terms): the task term and any "
            "method terms are missing, so the stacked paths stay below the total loss (the dashed line).")


def curves(home: str, run: RunRow, log_y: bool, smoothing: int) -> None:
    series = cached.run_series(home, run)
    found = series.phases()
    if not found:
        st.info("No metrics yet: the first losses appear a few steps after the worker starts the run.")
        return
    path_ids = spec_summary(run.spec_yaml)["path_ids"]
    if MAIN_PHASE in found:
        phase_charts(series, MAIN_PHASE, path_ids, log_y, smoothing, run)
    for phase in found:
        if is_teacher_phase(phase):
            # Open while the teacher is what is training; folded away once the student starts.
            with st.expander(f"Teacher {teacher_of_phase(phase)} (trained inline)", expanded=MAIN_PHASE not in found):
                phase_charts(series, phase, [], log_y, smoothing, run)


def run_panel(home: str, run_id: str, log_y: bool, smoothing: int, was_active: bool) -> None:
    # A fragment rerun is called by Streamlit directly, outside the page's own error guard.
    with user_errors("Live"):
        run_view(home, run_id, log_y, smoothing, was_active)


def run_view(home: str, run_id: str, log_y: bool, smoothing: int, was_active: bool) -> None:
    run = cached.run(home, run_id)
    if run is None:
        st.error(f"Run {run_id} is no longer in the workspace.")
        return
    if was_active and run.status not in ACTIVE_STATUSES:
        st.rerun()  # redraw the page so this fragment is rebuilt without polling
    run_header(home, run)
    worker_notice(home, run)
    result_metrics(home, run)
    teacher_metrics(home, run)
    curves(home, run, log_y, smoothing)
    with st.expander("Recent events"):
        events = cached.events(home, run_id)
        if events.empty:
            st.caption("No events recorded yet.")
        else:
            st.dataframe(events, hide_index=True)


def main() -> None:
    st.title("Live")
    home = cached.home()
    runs = picker_runs(home, keep_active=True)
    if runs.empty:
        empty_state(home)
        return
    run_id = run_picker(runs)
    left, right = st.columns([1, 2], vertical_alignment="bottom")
    with left:
        log_y = st.toggle("Log-scale loss axis")
    with right:
        smoothing = smoothing_picker("live_smoothing")
    run = cached.run(home, run_id)
    active = run is not None and run.status in ACTIVE_STATUSES
    # Poll only while the run can still change; a finished run is drawn once.
    st.fragment(run_every=POLL_S if active else None)(run_panel)(home, run_id, log_y, smoothing, active)


with user_errors("Live"):
    main()
