"""Teacher importance: what an adaptive path method or weighting learned about teachers, spots and samples.

The page names no plugin: each registered path method and weighting that records telemetry declares it
(``engine.vocabulary.TelemetryPanel``: arrays, their axes and meaning, a suggested view), and a
section appears for each declaration whose arrays the run has, drawn by ``app.telemetry_views``.
Others record none, and the page says so.
"""
from __future__ import annotations

import streamlit as st

from app import cached
from app import telemetry_views as tv
from app.nav import page_file
from app.queries import spec_summary
from app.widgets import pick_run, picker_runs, user_errors
from engine.spec import RunSpec, SpecError, spec_from_yaml
from engine.store import RunRow
from engine.vocabulary import TelemetryPanel


def no_telemetry(spec: RunSpec | None, combination: str, declared: dict[str, TelemetryPanel]) -> None:
    """Why nothing is drawn: the run's plugins record their arrays later, or none of them records any (then a
    link to Configure, where one that does is picked)."""
    own = [p.name for p in (spec.method, spec.weighting) if p is not None] if spec is not None else []
    recording = next((name for name in own if name in declared), None)
    if recording is not None:
        st.info(f"No telemetry recorded yet: {recording} records its arrays {declared[recording].when}. "
                "Come back once the run has started.", icon=":material/insights:")
        return
    names = sorted(declared)
    listed = " or ".join(filter(None, [", ".join(names[:-1]), *names[-1:]]))
    st.info(f"This run's combination ({combination}) records no per-instance weights: run {listed} to see them "
            "(pick the path method or weighting on Configure).", icon=":material/insights:")
    st.page_link(page_file("configure"), label="Configure a run", icon=":material/tune:")


def run_view(home: str, run: RunRow) -> None:
    """Every registered plugin's telemetry panel the run has recorded, drawn by the view it suggests."""
    summary = spec_summary(run.spec_yaml)
    keys = cached.array_keys(home, run.id)
    declared = tv.panels()
    shown = False
    for name, panel in declared.items():
        recorded = panel.recorded(keys)
        if recorded:
            tv.show_panel(tv.View(home, run, name, panel, recorded, summary["teacher_ids"]))
            shown = True
    if not shown:
        no_telemetry(run_spec(run), summary["combination"], declared)


def run_spec(run: RunRow) -> RunSpec | None:
    """The run's spec (version 1 migrated), or None when it no longer parses."""
    try:
        return spec_from_yaml(run.spec_yaml)
    except SpecError:
        return None


def main() -> None:
    st.title("Teacher importance")
    home = cached.home()
    runs = picker_runs(home)
    declared = tv.panels()
    # Opened without a pick, the page shows the newest run whose method or weighting records telemetry.
    suits = runs["combination"].map(lambda combination: any(part in declared for part in combination.split(" · ")))
    # Telemetry arrives every few hundred steps: the page redraws on request, not by polling.
    run = pick_run(home, runs, refresh_what="telemetry", suits=suits)
    if run is not None:
        run_view(home, run)


with user_errors("Teacher importance"):
    main()
