"""Home: what PathScope is, the one-click demo, and the latest runs."""
from pathlib import Path

import pandas as pd
import streamlit as st

from app import cached, run_table
from app.cluster import ask_cluster
from app.nav import page_file
from app.widgets import DEMO_SPEC, empty_state, go_live, user_errors
from app.writes import submit_run
from engine.spec import SpecError, load_spec
from engine.validate import validate_spec

RECENT = 8

st.title("PathScope")
st.markdown(
    """
A browser lab for **knowledge distillation with many paths at once**. Pick teachers, a student
and the *paths* between them (teacher layer → student layer → distiller loss); a background worker
trains the student while a *weighting* weighs the paths' terms (a *path method* such as AMTML may change what the
paths compute), and these pages show the curves live.

- **Researchers** compare weightings and path methods on one setup and spot a harmful path before spending GPU days.
- **Teachers of a course** show distillation live: temperature, hints, adaptive weights, negative transfer.
- **Practitioners** find out which teachers and layers are worth distilling from for their own model and data.
"""
)

st.subheader("Try it")
st.caption(
    "The demo trains a small CNN teacher on scikit-learn's 8×8 digits, then distils it into a "
    "student through one KD path: seconds on a laptop CPU."
)
if st.button("Run the demo", type="primary", icon=":material/play_arrow:"):
    with user_errors("Run the demo"):
        spec = load_spec(DEMO_SPEC)
        problems = validate_spec(spec)
        if problems:
            raise SpecError(problems)
        submit_run(Path(cached.home()), spec)
        go_live()

st.subheader("Recent runs")
with user_errors("Recent runs"):
    if run_table.recent(cached.home(), RECENT).empty:
        empty_state(cached.home())
    else:
        st.page_link(page_file("compare"), label="Search, tag and compare all runs", icon=":material/compare_arrows:")

st.subheader("Where runs execute")
with user_errors("Where runs execute"):
    where = cached.cluster(cached.home())
    if where.empty:
        st.info("Nothing is running. Runs go to this machine's workers (started for you when you launch), or to a "
                "Ray cluster: choose *Ray cluster* under *Launch a comparison* on Configure, or "
                "`python -m engine sweep SPEC --executor ray`.", icon=":material/info:")
    else:
        cols = st.columns(4)
        cols[0].metric("local workers", where.local_workers, help="worker processes of this machine")
        cols[1].metric("Ray drivers", where.ray_drivers, help="processes driving a sweep on a Ray cluster; "
                                                             "each is the one writer of its trials' rows")
        cols[2].metric("Ray trials running", where.ray_running)
        cols[3].metric("Ray trials waiting", where.ray_queued, help="waiting for a free slot on the cluster")
        if not where.nodes.empty:
            st.dataframe(where.nodes, hide_index=True,
                         column_config={"running": st.column_config.NumberColumn("runs running")})
        if where.addresses:
            st.caption("Ray runs were launched on: " + ", ".join(where.addresses))
    with st.expander("Ask a Ray cluster for its nodes"):
        address = st.text_input("Ray address", "auto", help="auto (the cluster `ray start` started here) or "
                                                             "host:port of the head; joining takes a few seconds")
        if st.button("Ask the cluster", icon=":material/hub:"):
            with st.spinner(f"Asking {address}…"):
                state = ask_cluster(address.strip() or "auto", Path(cached.home()))
            if state["error"]:
                st.error(state["error"])
            else:
                st.caption(f"{len(state['nodes'])} node(s), {state['cpus']:g} CPUs, {state['gpus']:g} GPUs")
                st.dataframe(pd.DataFrame(state["nodes"]), hide_index=True)
