"""The Teacher importance page's views of plugin telemetry, one renderer per view name.

A plugin declares what it records (``engine.vocabulary.TelemetryPanel``: title, caption, arrays by
role with their axes and meaning, a suggested view); the page lists the panels of the registered path
methods and weightings and calls ``VIEWS[panel.view]`` for each one a run has recorded. A new plugin whose telemetry
fits a view here needs no page edit; a new kind of view is one renderer added to ``VIEWS``.
Renderers read through ``app.cached`` and draw with ``app.telemetry_charts`` (pure builders).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd
import streamlit as st
import yaml
from pydantic import ValidationError

from app import cached
from app import telemetry_charts as tc
from app.queries import spec_summary
from app.samples import SampleImages
from engine.data.bundle import DatasetError
from engine.methods import METHODS
from engine.registry import UnknownName
from engine.spec import DatasetSpec
from engine.store import RunRow
from engine.vocabulary import GROUP_HEATMAPS_VIEW, ROUTING_VIEW, TEACHER_WEIGHTS_VIEW, TelemetryPanel
from engine.weightings import WEIGHTINGS

GALLERY_SIZE = 12
GALLERY_COLUMNS = 6
PLOT_CONFIG = {"displaylogo": False}
SMALL_PLOT_CONFIG = {"displayModeBar": False}


@dataclass(frozen=True)
class View:
    """What a renderer gets: the workspace, the run, the plugin's name (widget keys) and panel, the
    run's array keys of the panel's primary array, and the run's teachers in spec order."""

    home: str
    run: RunRow
    name: str
    panel: TelemetryPanel
    keys: list[str]
    teacher_ids: list[str]

    def key(self, what: str) -> str:
        return f"{self.name}-{what}-{self.run.id}"


def panels() -> dict[str, TelemetryPanel]:
    """Registered path method or weighting name -> its telemetry declaration, for those that record telemetry
    (methods first; the registries share no name, since both kinds of term are named after them)."""
    return {entry.name: entry.obj.telemetry for registry in (METHODS, WEIGHTINGS) for entry in registry
            if getattr(entry.obj, "telemetry", None) is not None}


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


def optional_frame(view: View, role: str) -> pd.DataFrame:
    """The recorded array of a role the panel may declare (empty when it does not, or nothing was recorded)."""
    array = next((a for a in view.panel.arrays if a.role == role), None)
    return cached.array_frame(view.home, view.run.id, array.key) if array else pd.DataFrame()


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


# ---------------------------------------------------------------- teacher_weights
def teacher_gallery(view: View, at_step: pd.DataFrame) -> None:
    st.subheader("Samples and their teachers")
    order = st.radio("Order", tc.GALLERY_ORDERS, horizontal=True, key=view.key("order"),
                     help="decisive: one teacher takes most of the weight · even: the teachers share it")
    images = sample_images(view.run)
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
            show_chart(tc.sample_weight_figure(row, view.teacher_ids), key=f"{view.name}-sample-{view.run.id}-{sample}",
                       config=SMALL_PLOT_CONFIG)


def teacher_weights_view(view: View) -> None:
    """Roles: "weights" (sample x teacher shares), optional "norms" (step x teacher lines)."""
    home, run, teacher_ids = view.home, view.run, view.teacher_ids
    weights = cached.labelled_array_frame(home, run.id, view.panel.array("weights").key)
    step = pick_step(recorded_steps(weights), "Logged step", key=view.key("step"))
    at_step = tc.rows_at_step(weights, step)
    if len(at_step.columns) == 3:
        show_chart(tc.teacher_simplex_figure(at_step, teacher_ids, step), key=view.key("simplex"))
    else:
        show_chart(tc.teacher_bars_figure(at_step, teacher_ids, step), key=view.key("bars"))
    labels = sorted(int(c) for c in weights.index.get_level_values("label").unique() if c >= 0)
    # Above both charts rather than in the left column, so the two charts line up.
    label = st.columns([1, 2])[0].selectbox(
        "Class (mean weight chart)", [None, *labels], key=view.key("class"),
        format_func=lambda c: "all samples" if c is None else tc.class_name(c))
    left, right = st.columns(2)
    with left:
        show_chart(tc.class_weight_figure(tc.class_mean_weights(weights, label), teacher_ids, label),
                   key=view.key("class-chart"))
    with right:
        norms = optional_frame(view, "norms")
        if norms.empty:
            st.caption("No ‖θ_m‖ recorded for this run.")
        else:
            show_chart(tc.theta_norm_figure(norms, teacher_ids), key=view.key("theta"))
    teacher_gallery(view, at_step)


# ---------------------------------------------------------------- routing
def routing_view(view: View) -> None:
    """Roles: "decisions" (sample x spot, 0/1), optional "losses" (step x loss lines)."""
    home, run = view.home, view.run
    decisions = cached.labelled_array_frame(home, run.id, view.panel.array("decisions").key)
    left, right = st.columns(2)
    with left:
        show_chart(tc.spot_fraction_figure(tc.spot_fractions(decisions)), key=view.key("fraction"))
    with right:
        losses = optional_frame(view, "losses")
        if losses.empty:
            st.caption("No agent losses recorded for this run.")
        else:
            show_chart(tc.agent_loss_figure(losses), key=view.key("losses"))
    step = pick_step(recorded_steps(decisions), "Logged step", key=view.key("step"))
    left, right = st.columns(2)
    with left:
        show_chart(tc.decision_map_figure(tc.rows_at_step(decisions, step), step), key=view.key("map"))
    with right:
        show_chart(tc.spot_use_figure(tc.spot_use_by_class(decisions)), key=view.key("use"))


# ---------------------------------------------------------------- group_heatmaps
def group_heatmaps_view(view: View) -> None:
    """Roles: "alpha" (per group: step x block), metrics "entropy" (per group), "loss_ts" and "loss_st"."""
    home, run, panel = view.home, view.run, view.panel
    alpha = panel.array("alpha")
    groups = [alpha.group_of(key) for key in view.keys]
    columns = st.columns(min(len(groups), 2))
    for i, (group, key) in enumerate(zip(groups, view.keys)):
        with columns[i % len(columns)]:
            alphas = cached.array_frame(home, run.id, key, alpha.phase)
            show_chart(tc.alpha_heatmap_figure(alphas, group), key=f"{view.name}-alpha-{run.id}-{group}")
    metrics = cached.metrics(home, run.id)
    search = metrics[metrics["phase"] == alpha.phase]
    if search.empty:
        st.caption("No search losses recorded for this run.")
        return
    left, right = st.columns(2)
    with left:
        show_chart(tc.alpha_entropy_figure(search, groups, panel.metric("entropy").key), key=view.key("entropy"))
    with right:
        show_chart(tc.bridge_loss_figure(search, panel.metric("loss_ts").key, panel.metric("loss_st").key),
                   key=view.key("bridge"))


VIEWS: dict[str, Callable[[View], None]] = {
    TEACHER_WEIGHTS_VIEW: teacher_weights_view,
    ROUTING_VIEW: routing_view,
    GROUP_HEATMAPS_VIEW: group_heatmaps_view,
}


def show_panel(view: View) -> None:
    st.header(view.panel.title)
    st.caption(view.panel.caption)
    VIEWS[view.panel.view](view)
