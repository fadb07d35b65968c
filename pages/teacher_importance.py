"""Teacher importance: what an adaptive aggregator learned about teachers, spots and samples.

Each section reads one aggregator's telemetry arrays and appears only when the run has them:
AMTML-KD's per-instance teacher weights, SAKD's per-sample routing decisions, DFA's searched
feature-aggregation weights. Other aggregators record none, and the page says so.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st
import yaml
from pydantic import ValidationError

from app import cached
from app import telemetry_charts as tc
from app.queries import spec_summary
from app.samples import SampleImages
from app.widgets import pick_run, user_errors
from engine.data.bundle import DatasetError
from engine.registry import UnknownName
from engine.spec import DatasetSpec
from engine.store import RunRow

AMTML_WEIGHTS = "amtml/teacher_weights"
AMTML_THETA = "amtml/theta_norm"
SAKD_DECISIONS = "sakd/decisions"
SAKD_LOSSES = "sakd/agent_losses"
DFA_ALPHA_PREFIX = "dfa/alpha:"
SEARCH_PHASE = "search"
# The aggregators whose telemetry this page draws, in the words of the empty state.
VIEW_AGGREGATORS = ("amtml", "sakd", "dfa")
GALLERY_SIZE = 12
GALLERY_COLUMNS = 6
PLOT_CONFIG = {"displaylogo": False}
SMALL_PLOT_CONFIG = {"displayModeBar": False}


def show_chart(fig, key: str, config: dict = PLOT_CONFIG) -> None:
    st.plotly_chart(fig, key=key, config=config)


def pick_step(steps: list[int], label: str, key: str) -> int:
    """The logged step to look at, newest by default (a slider needs two steps to slide between)."""
    if len(steps) == 1:
        st.caption(f"{label}: {steps[0]} (the only one recorded so far)")
        return steps[0]
    return st.select_slider(label, options=steps, value=steps[-1], key=key)


def recorded_steps(frame: pd.DataFrame) -> list[int]:
    return sorted(int(s) for s in frame.index.get_level_values("step").unique())


def no_telemetry_message(aggregator: str) -> str:
    if aggregator in VIEW_AGGREGATORS:
        return (f"No telemetry recorded yet: {aggregator} records its arrays every `telemetry_every` steps "
                "while the student trains (DFA: once per search epoch). Come back once the run has started.")
    return (f"This run's aggregator ({aggregator}) records no per-instance weights: run "
            f"{', '.join(VIEW_AGGREGATORS[:-1])} or {VIEW_AGGREGATORS[-1]} to see them "
            "(pick the aggregator on Configure, or launch a comparison there).")


# ---------------------------------------------------------------- sample pictures
def dataset_json(spec_yaml: str) -> str:
    """The run's dataset spec as canonical JSON (the image cache key); raises ValidationError if unusable."""
    data = yaml.safe_load(spec_yaml)
    section = data.get("dataset") if isinstance(data, dict) else None
    return DatasetSpec.model_validate(section if isinstance(section, dict) else {}).model_dump_json()


def sample_images(run: RunRow) -> SampleImages | None:
    """The run's dataset pictures, or None after saying why they cannot be shown (the charts still are)."""
    name = spec_summary(run.spec_yaml)["dataset"]
    try:
        return cached.sample_images(dataset_json(run.spec_yaml))
    except (DatasetError, UnknownName, ValidationError, yaml.YAMLError, OSError) as err:
        st.info(f"Sample pictures are not shown: the dataset {name!r} cannot be loaded here ({err}). "
                "The weights below are unaffected.", icon=":material/image_not_supported:")
        return None


# ---------------------------------------------------------------- AMTML
def amtml_gallery(run: RunRow, at_step: pd.DataFrame, teacher_ids: list[str]) -> None:
    st.subheader("Samples and their teachers")
    order = st.radio("Order", tc.GALLERY_ORDERS, horizontal=True, key=f"amtml-order-{run.id}",
                     help="decisive: one teacher takes most of the weight · even: the teachers share it")
    images = sample_images(run)
    chosen = tc.gallery_samples(at_step, order, GALLERY_SIZE)
    columns = st.columns(GALLERY_COLUMNS)
    for i, ((sample, label), row) in enumerate(chosen.iterrows()):
        with columns[i % GALLERY_COLUMNS]:
            picture = images.image(int(sample)) if images is not None else None
            if picture is not None:
                st.image(picture, clamp=True)
            elif images is not None:
                st.caption("no picture: this sample id is not in the dataset")
            st.caption(f"#{sample} · {tc.class_name(int(label))}")
            show_chart(tc.sample_weight_figure(row, teacher_ids), key=f"amtml-sample-{run.id}-{sample}",
                       config=SMALL_PLOT_CONFIG)


def amtml_section(home: str, run: RunRow, teacher_ids: list[str]) -> None:
    st.header("AMTML-KD · per-instance teacher weights")
    st.caption("For each sample the aggregator splits a weight of 1 among the teachers "
               "(w(x) = softmax over teachers); the student learns from that mix of their soft targets.")
    weights = cached.labelled_array_frame(home, run.id, AMTML_WEIGHTS)
    step = pick_step(recorded_steps(weights), "Logged step", key=f"amtml-step-{run.id}")
    at_step = tc.rows_at_step(weights, step)
    if len(at_step.columns) == 3:
        show_chart(tc.teacher_simplex_figure(at_step, teacher_ids, step), key=f"amtml-simplex-{run.id}")
    else:
        show_chart(tc.teacher_bars_figure(at_step, teacher_ids, step), key=f"amtml-bars-{run.id}")
    labels = sorted(int(c) for c in weights.index.get_level_values("label").unique() if c >= 0)
    # Above both charts rather than in the left column, so the two charts line up.
    label = st.columns([1, 2])[0].selectbox(
        "Class (mean weight chart)", [None, *labels], key=f"amtml-class-{run.id}",
        format_func=lambda c: "all samples" if c is None else tc.class_name(c))
    left, right = st.columns(2)
    with left:
        show_chart(tc.class_weight_figure(tc.class_mean_weights(weights, label), teacher_ids, label),
                   key=f"amtml-class-chart-{run.id}")
    with right:
        norms = cached.array_frame(home, run.id, AMTML_THETA)
        if norms.empty:
            st.caption("No ‖θ_m‖ recorded for this run.")
        else:
            show_chart(tc.theta_norm_figure(norms, teacher_ids), key=f"amtml-theta-{run.id}")
    amtml_gallery(run, at_step, teacher_ids)


# ---------------------------------------------------------------- SAKD
def sakd_section(home: str, run: RunRow) -> None:
    st.header("SAKD · where each sample is distilled")
    st.caption("Per sample and spot, the policy routes the sample through the teacher's block (distilled) "
               "or the student's own block.")
    decisions = cached.labelled_array_frame(home, run.id, SAKD_DECISIONS)
    left, right = st.columns(2)
    with left:
        show_chart(tc.spot_fraction_figure(tc.spot_fractions(decisions)), key=f"sakd-fraction-{run.id}")
    with right:
        losses = cached.array_frame(home, run.id, SAKD_LOSSES)
        if losses.empty:
            st.caption("No agent losses recorded for this run.")
        else:
            show_chart(tc.agent_loss_figure(losses), key=f"sakd-losses-{run.id}")
    step = pick_step(recorded_steps(decisions), "Logged step", key=f"sakd-step-{run.id}")
    left, right = st.columns(2)
    with left:
        show_chart(tc.decision_map_figure(tc.rows_at_step(decisions, step), step), key=f"sakd-map-{run.id}")
    with right:
        show_chart(tc.spot_use_figure(tc.spot_use_by_class(decisions)), key=f"sakd-use-{run.id}")


# ---------------------------------------------------------------- DFA
def dfa_section(home: str, run: RunRow, alpha_keys: list[str]) -> None:
    st.header("DFA · feature aggregation search")
    st.caption("Within each layer group the student learns from a mix of all teacher blocks, "
               "weighted by α = softmax(b); the search tunes b on the bridge loss.")
    groups = [key[len(DFA_ALPHA_PREFIX):] for key in alpha_keys]
    columns = st.columns(min(len(groups), 2))
    for i, (group, key) in enumerate(zip(groups, alpha_keys)):
        with columns[i % len(columns)]:
            alphas = cached.array_frame(home, run.id, key, SEARCH_PHASE)
            show_chart(tc.alpha_heatmap_figure(alphas, group), key=f"dfa-alpha-{run.id}-{group}")
    metrics = cached.metrics(home, run.id)
    search = metrics[metrics["phase"] == SEARCH_PHASE]
    if search.empty:
        st.caption("No search losses recorded for this run.")
        return
    left, right = st.columns(2)
    with left:
        show_chart(tc.alpha_entropy_figure(search, groups), key=f"dfa-entropy-{run.id}")
    with right:
        show_chart(tc.bridge_loss_figure(search), key=f"dfa-bridge-{run.id}")


# ---------------------------------------------------------------- page
def run_view(home: str, run: RunRow) -> None:
    summary = spec_summary(run.spec_yaml)
    keys = cached.array_keys(home, run.id)
    alpha_keys = [k for k in keys if k.startswith(DFA_ALPHA_PREFIX)]
    shown = False
    if AMTML_WEIGHTS in keys:
        amtml_section(home, run, summary["teacher_ids"])
        shown = True
    if SAKD_DECISIONS in keys:
        sakd_section(home, run)
        shown = True
    if alpha_keys:
        dfa_section(home, run, alpha_keys)
        shown = True
    if not shown:
        st.info(no_telemetry_message(summary["aggregator"]), icon=":material/insights:")


def main() -> None:
    st.title("Teacher importance")
    home = cached.home()
    # Telemetry arrives every few hundred steps: the page redraws on request, not by polling.
    run = pick_run(home, cached.runs(home), refresh_what="telemetry")
    if run is not None:
        run_view(home, run)


with user_errors("Teacher importance"):
    main()
