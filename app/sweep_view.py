"""Compare's sweep analysis: over the runs of a group (or any runs in the view), which spec fields vary, how
much each matters for accuracy, the spread over seeds, per-epoch bands and each path's final weight.

The analysis itself is app/sweep_analysis.py (pure), its charts app/sweep_charts.py (plain dicts); this module
reads what they need (each run's spec, and only the accuracy and path-weight metrics) and lays them out. The
figures it draws are returned, so the group's HTML report carries the same charts.
"""
from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
import yaml

from app import sweep_analysis as sa
from app import sweep_charts
from app.cached import TTL_S
from engine.store import Store
from engine.vocabulary import MAIN_PHASE, PATH_WEIGHT_PREFIX, TEST_ACC, VAL_ACC

Figure = dict[str, Any]
BAND_KEYS = (VAL_ACC, TEST_ACC)
PLOT_CONFIG = {"displaylogo": False}
MAX_RUNS = 300  # beyond this the specs' read and the forest take seconds: the view should be narrowed first
MAX_AXES = 12  # parallel coordinates: past a dozen axes their slanted labels run into each other


@st.cache_data(ttl=TTL_S, show_spinner=False)
def specs_of(home_dir: str, run_ids: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each run's stored spec as plain data; a run whose YAML does not load to a mapping is left out (its every
    field would look varied)."""
    with closing(Store(Path(home_dir), readonly=True)) as store:
        rows = [store.get_run(run_id) for run_id in run_ids]
    specs = {}
    for row in rows:
        if row is None:
            continue
        try:
            data = yaml.safe_load(row.spec_yaml)
        except yaml.YAMLError:
            continue
        if isinstance(data, dict):
            specs[row.id] = data
    return specs


@st.cache_data(ttl=TTL_S, show_spinner=False)
def sweep_metrics(home_dir: str, run_ids: tuple[str, ...], path_ids: tuple[str, ...]) -> pd.DataFrame:
    """Only the rows the analysis draws: per-epoch accuracies, and each path's LAST weight (weights are logged
    at every logged step: a long run holds hundreds of thousands of them), student phase."""
    weights = [f"{PATH_WEIGHT_PREFIX}{p}" for p in path_ids]
    with closing(Store(Path(home_dir), readonly=True)) as store:
        rows = [(*tuple(r), run_id) for run_id in run_ids
                for r in [*store.metrics(run_id, keys=BAND_KEYS, phase=MAIN_PHASE),
                          *store.last_metrics(run_id, weights, MAIN_PHASE)]]
    return pd.DataFrame(rows, columns=["phase", "step", "epoch", "key", "value", "run_id"])


@st.cache_data(ttl=TTL_S, show_spinner=False)
def importance(frame: pd.DataFrame, fields: tuple[str, ...], target: str) -> pd.DataFrame:
    """Cached: the random forest is the slowest part of the section (and imports scikit-learn once)."""
    return sa.parameter_importance(frame, list(fields), target)


def _chart(figure_of, *args: Any, title: str, key: str, drawn: list[tuple[str, Figure]]) -> None:
    """Draw one sweep chart, or say why there is nothing to draw (the builders raise ValueError then)."""
    try:
        figure = figure_of(*args)
    except ValueError as err:
        st.info(str(err))
        return
    st.plotly_chart(figure, key=key, config=PLOT_CONFIG)
    drawn.append((title, figure))


def seed_table(frame: pd.DataFrame, chart_labels: pd.Series) -> None:
    """Mean ± std per configuration; with its chart label where the charts number the configurations."""
    summary = sa.seed_summary(frame)
    labels = dict(zip(frame["config"], chart_labels.reindex(frame.index)))
    if any(labels[c] != c for c in summary["config"]):
        summary.insert(0, "label", summary["config"].map(labels))
    st.dataframe(
        summary, hide_index=True,
        column_config={
            "label": st.column_config.TextColumn("on the charts"),
            "config": st.column_config.TextColumn("configuration", help="runs identical but for the seed"),
            "n": st.column_config.NumberColumn("runs", help="runs with a final accuracy"),
            "final_mean_pct": st.column_config.NumberColumn("final acc, mean (%)", format="%.2f"),
            "final_std_pct": st.column_config.NumberColumn("± std", format="%.2f",
                                                           help="sample standard deviation over seeds (n − 1)"),
            "best_mean_pct": st.column_config.NumberColumn("best acc, mean (%)", format="%.2f"),
            "best_std_pct": st.column_config.NumberColumn("± std ", format="%.2f"),
        },
    )


def sweep_section(home: str, view: pd.DataFrame) -> list[tuple[str, Figure]]:
    """The sweep analysis of the runs in ``view`` (the run table's rows: id, final_acc, best_acc as fractions);
    returns the (title, figure) pairs it drew."""
    st.subheader("Sweep analysis")
    run_ids = list(view["id"])
    if len(run_ids) < 2:
        st.info("Put at least two runs in the view above (a group, or runs picked by hand) to see what their "
                "settings change.")
        return []
    if len(run_ids) > MAX_RUNS:
        st.info(f"The sweep analysis covers at most {MAX_RUNS} runs and the view holds {len(run_ids)}: pick a "
                "group above, or narrow the table with a filter or a search.")
        return []
    specs = specs_of(home, tuple(run_ids))
    sweep = sa.varied_fields(specs)
    frame = sa.sweep_frame(sweep, _fractions(view, "final_acc"), _fractions(view, "best_acc"))
    chart_labels = sa.short_configs(sweep.configs)
    if not sweep.fields:
        st.caption("These runs share every setting but the seed: the spread below is the seeds' alone.")
    target = st.radio("Accuracy", [sa.FINAL, sa.BEST], horizontal=True, key="cmp_sweep_target",
                      format_func=lambda t: sa.TARGET_LABELS[t],
                      help="final: test accuracy at the end; best: the best epoch's validation accuracy")
    seed_table(frame, chart_labels)
    drawn: list[tuple[str, Figure]] = []
    if sweep.fields:
        field_charts(frame, sweep, target, drawn)
    curve_charts(sweep_metrics(home, tuple(specs), tuple(sweep.path_ids)), chart_labels, sweep.path_ids, drawn)
    return drawn


def field_charts(frame: pd.DataFrame, sweep: sa.VariedFields, target: str, drawn: list[tuple[str, Figure]]) -> None:
    """Parallel coordinates over the varied fields (the MAX_AXES most important when more vary), and each field's
    importance for ``target``."""
    try:
        table = importance(frame, tuple(sweep.fields), target)
    except ValueError as err:
        table, why = None, str(err)
    axes = parcoords_fields(sweep.fields, table)
    if len(axes) < len(sweep.fields):
        ranked = 0 if table is None else len(set(axes) & set(table["field"]))
        which = f"the {ranked} that go most with the accuracy" if ranked else f"the first {len(axes)}"
        if 0 < ranked < len(axes):
            which += f", then the first {len(axes) - ranked} others (fields importance cannot rank)"
        st.caption(f"{len(sweep.fields)} settings differ between these runs (runs that do not share a setup, such as "
                   f"other teachers or paths, differ in many at once): the chart shows {which}.")
    _chart(sweep_charts.parcoords_figure, frame, axes, sweep.numeric, target,
           title="Parallel coordinates", key="cmp_parcoords", drawn=drawn)
    if table is None:
        st.info(why[:1].upper() + why[1:])
        return
    _chart(sweep_charts.importance_figure, table, title="Parameter importance", key="cmp_importance", drawn=drawn)


def parcoords_fields(fields: list[str], importance_table: pd.DataFrame | None) -> list[str]:
    """At most MAX_AXES fields for the parallel coordinates: past a dozen axes their labels run into each other.
    The most important first when the importance is known (fields it left out come last), else the first ones."""
    if len(fields) <= MAX_AXES:
        return list(fields)
    ranked = [] if importance_table is None else [f for f in importance_table["field"] if f in fields]
    return (ranked + [f for f in fields if f not in ranked])[:MAX_AXES]


def curve_charts(metrics: pd.DataFrame, configs: pd.Series, path_ids: list[str],
                 drawn: list[tuple[str, Figure]]) -> None:
    """Mean ± std per epoch of the first accuracy logged, and each path's final weight, per configuration."""
    present = [k for k in BAND_KEYS if (metrics["key"] == k).any()]
    if present:
        _chart(sweep_charts.band_figure, sa.epoch_bands(metrics, configs, present[0]), present[0],
               title="Mean ± std per epoch", key="cmp_bands", drawn=drawn)
    _chart(sweep_charts.path_weights_figure, sa.path_final_weights(metrics, configs, path_ids), path_ids,
           title="Final weight of each path", key="cmp_path_weights", drawn=drawn)


def _fractions(view: pd.DataFrame, column: str) -> dict[str, float | None]:
    return {run_id: None if pd.isna(value) else float(value) for run_id, value in zip(view["id"], view[column])}
