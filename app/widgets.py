"""Widgets and small page helpers shared by the pages."""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Iterator

import pandas as pd
import streamlit as st

from app import cached, links
from app.nav import page_file
from app.report import report_text
from engine.export import student_path
from engine.spec import SpecError
from engine.store import ACTIVE_STATUSES, RunRow, WorkspaceError

DEMO_SPEC = Path(__file__).resolve().parents[1] / "assets" / "configs" / "digits_kd.yaml"
SELECTED_RUN = "selected_run"
EMPTY_RUNS_MESSAGE = "No runs yet — press **Run the demo** on Home or launch one from Configure."
ALL_ARCHIVED_MESSAGE = ("Every run in this workspace is archived — turn on **Archived runs** on Compare to restore "
                        "one, or launch a new one from Configure.")
# Smoothing windows in steps (0: off); windows, not point counts, so runs logged at any rate smooth alike.
SMOOTHING_WINDOWS = (0, 10, 50, 100, 500, 1000, 5000)
STATUS_COLORS = {"queued": "gray", "running": "blue", "interrupted": "violet", "done": "green", "failed": "red",
                 "cancelled": "orange"}


@contextmanager
def user_errors(what: str) -> Iterator[None]:
    """Show known failures as a message naming the problem instead of a traceback."""
    try:
        yield
    except SpecError as err:
        st.error(f"{what}: the spec is invalid\n\n" + "\n".join(f"- `{line}`" for line in err.errors))
    except WorkspaceError as err:
        st.error(f"{what}: {err}")


def picker_runs(home: str, keep_active: bool = False) -> pd.DataFrame:
    """The runs a page's run picker offers, newest first: those not archived, the archived one the URL names (a link
    shared before the run was archived still opens it) and, with ``keep_active``, the archived ones still queued or
    running (Live: where they are watched and cancelled)."""
    runs = cached.runs(home)
    if runs.empty:
        return runs
    keep = ~runs["archived"].astype(bool) | (runs["id"] == links.read(links.RUN))
    if keep_active:
        keep |= runs["status"].isin(ACTIVE_STATUSES)
    return runs[keep]


def empty_state(home: str | None = None) -> None:
    """What to do when no run is listed: launch one or, when ``home`` holds only archived runs, restore one."""
    every = cached.runs(home) if home is not None else None
    if every is not None and not every.empty and every["archived"].astype(bool).all():
        st.info(ALL_ARCHIVED_MESSAGE, icon=":material/archive:")
        restore_archived_link()
    else:
        st.info(EMPTY_RUNS_MESSAGE, icon=":material/science:")


def restore_archived_link() -> None:
    """A link to Compare with its archived runs listed, where they are restored."""
    st.page_link(page_file("compare"), label="Restore archived runs", icon=":material/unarchive:",
                 query_params={links.ARCHIVED: "1"})


def status_badge(status: str) -> None:
    st.badge(status, color=STATUS_COLORS.get(status, "gray"))


def run_picker(runs: pd.DataFrame, label: str = "Run", suits: pd.Series | None = None) -> str | None:
    """Select one run: the URL's ?run=, else session_state["selected_run"], else the newest run that ``suits``
    the page (a boolean per row: it has what the page draws), else the newest; the pick is remembered in both,
    so the page's link opens the same run."""
    if runs.empty:
        return None
    options = list(runs["id"])
    labels = dict(zip(runs["id"], runs["label"]))
    # A link's ?run= wins over the session's last pick: it is what the person opening the link wants to see.
    # The URL's echo of this session's own pick does not: a run picked in code since (one just launched) wins.
    wanted = None
    if links.opened(links.RUN):
        wanted = links.linked_choice(links.RUN, set(options), "run", "the last run picked (or the newest)")
    wanted = wanted or st.session_state.get(SELECTED_RUN)
    if wanted not in options and suits is not None:
        wanted = next((run_id for run_id, ok in zip(runs["id"], suits) if ok), None)
    picked = st.selectbox(
        label, options, index=options.index(wanted) if wanted in options else 0,
        format_func=lambda run_id: labels.get(run_id, run_id),
    )
    st.session_state[SELECTED_RUN] = picked
    links.write(links.RUN, picked)
    return picked


def pick_run(home: str, runs: pd.DataFrame, refresh_what: str | None = None,
             suits: pd.Series | None = None) -> RunRow | None:
    """The run chosen in a run picker, or None once the page has said why there is none to show.

    ``refresh_what`` names what a Refresh button loads while the run is still training (None: no
    button): pages that redraw on request rather than poll keep their sliders where they are. ``suits``: see
    ``run_picker``.
    """
    if runs.empty:
        empty_state(home)
        return None
    run_id = run_picker(runs, suits=suits)
    run = cached.run(home, run_id)
    if run is None:
        st.error(f"Run {run_id} is no longer in the workspace.")
        return None
    if refresh_what is not None and run.status in ACTIVE_STATUSES:
        st.button("Refresh", icon=":material/refresh:", help=f"The run is {run.status}: load the newest {refresh_what}")
    return run


def smoothing_picker(key: str) -> int:
    """A smoothing window in steps for per-step curves (0: the raw series)."""
    return st.select_slider(
        "Smoothing window (steps)", SMOOTHING_WINDOWS, value=0, key=key,
        format_func=lambda window: "off" if window == 0 else f"{window:,}",
        help="A moving average over this many steps, computed on a fixed grid of steps: "
             "the curve does not change with how often a run logged or how the chart was downsampled.",
    )


def go_live() -> None:
    st.switch_page(page_file("live"))


def download_report(home: str, run_id: str, key: str) -> None:
    """The run as a self-contained HTML report (charts work offline) and a Markdown summary, built on a click
    (a report inlines plotly.js, about 5 MB)."""
    left, right = st.columns(2)
    left.download_button("Report (HTML)", partial(report_text, home, run_id, "html"), key=f"{key}-html",
                         file_name=f"pathscope-{run_id}.html", mime="text/html", on_click="ignore",
                         icon=":material/download:", help="Self-contained: its charts work offline")
    right.download_button("Summary (Markdown)", partial(report_text, home, run_id, "markdown"), key=f"{key}-md",
                          file_name=f"pathscope-{run_id}.md", mime="text/markdown", on_click="ignore",
                          icon=":material/download:")


def download_student(home: str, run: RunRow, key: str) -> None:
    """*Download student*: the finished run's state dict and model card as one .pt file."""
    if run.status != "done":
        return
    path = student_path(Path(home), run.id)
    if not path.is_file():
        st.caption(f"No student file in this run's folder (it finished before PathScope saved one): "
                   f"`python -m engine export {run.id} --student student.pt` writes it from the final checkpoint.")
        return
    safe_name = "".join(c if c.isalnum() or c in "-_" else "_" for c in run.name)[:60] or "run"
    st.download_button(
        "Download student", data=path.read_bytes, file_name=f"{safe_name}-{run.id}-student.pt",
        mime="application/octet-stream", icon=":material/download:", on_click="ignore", key=key,
        help="One .pt file: the state dict and a model card (architecture, normalisation, class names, input "
             "size, the spec, final metrics). Load it with torch.load(path, weights_only=True); TorchScript and "
             "ONNX: python -m engine export RUN --student FILE --format torchscript|onnx")
