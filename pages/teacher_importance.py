"""Teacher importance: what an adaptive aggregator learned about teachers, spots and samples.

The page names no aggregator: each registered aggregator that records telemetry declares it
(``engine.vocabulary.TelemetryPanel``: arrays, their axes and meaning, a suggested view), and a
section appears for each declaration whose arrays the run has, drawn by ``app.telemetry_views``.
Other aggregators record none, and the page says so.
"""
from __future__ import annotations

import streamlit as st

from app import cached
from app import telemetry_views as tv
from app.queries import spec_summary
from app.widgets import pick_run, user_errors
from engine.store import RunRow
from engine.vocabulary import TelemetryPanel


def no_telemetry_message(aggregator: str, declared: dict[str, TelemetryPanel]) -> str:
    if aggregator in declared:
        return (f"No telemetry recorded yet: {aggregator} records its arrays {declared[aggregator].when}. "
                "Come back once the run has started.")
    names = list(declared)
    listed = " or ".join(filter(None, [", ".join(names[:-1]), *names[-1:]]))
    return (f"This run's aggregator ({aggregator}) records no per-instance weights: run {listed} to see them "
            "(pick the aggregator on Configure, or launch a comparison there).")


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
        st.info(no_telemetry_message(summary["aggregator"], declared), icon=":material/insights:")


def main() -> None:
    st.title("Teacher importance")
    home = cached.home()
    # Telemetry arrives every few hundred steps: the page redraws on request, not by polling.
    run = pick_run(home, cached.runs(home), refresh_what="telemetry")
    if run is not None:
        run_view(home, run)


with user_errors("Teacher importance"):
    main()
