"""Figures of a sweep analysis (``app.sweep_analysis``), as plain plotly dicts: {"data": [...], "layout": {...}}.

Plain dicts skip building plotly objects trace by trace (each ``add_trace`` and ``update_layout`` validates
again); a report draws them through ``go.Figure`` like any other (app/report_html.py). ``st.plotly_chart`` (Streamlit 1.67) still validates a
dict once, and refuses one without traces: so a builder with nothing to draw raises ValueError with a message
for the page (``st.info``) instead. Values are plain lists (NaN as None). A page passes:

- ``parcoords_figure(sweep_frame(...), sweep.fields, sweep.numeric, FINAL)``: one line per run with the target;
- ``importance_figure(parameter_importance(...))``;
- ``band_figure(epoch_bands(metrics, sweep.configs, key), key)``;
- ``path_weights_figure(path_final_weights(metrics, sweep.configs, sweep.path_ids), sweep.path_ids)``: each
  path in its ``app.colors.path_color``, as on Live.
"""
from __future__ import annotations

import html
import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

from app.metric_names import axis_title, capitalised, display_values, metric_title
from app.colors import path_color, series_color
from app.sweep_analysis import TARGET_LABELS, value_key
from engine.spec import printable

Figure = dict[str, Any]
ACCURACY_SCALE = "Viridis"
# Neither measure is a path, a teacher or a split: a dark grey and a dark red, outside the palettes those use.
SPEARMAN_COLOR, FOREST_COLOR = "#4D4D4D", "#B2182B"
BAND_OPACITY = 0.18
HEIGHT = 380
LABEL_ANGLE = -20  # parcoords axis labels (full dotted field names) slanted, so long ones pass their neighbours
CONFIG_SEPARATOR = " · "  # between the fields of a configuration label (app.sweep_analysis.config_labels)


def _values(values: Iterable[Any]) -> list[Any]:
    """A JSON-ready list: numpy scalars as Python numbers, NaN as None (plotly leaves a gap)."""
    out = []
    for v in values:
        v = v.item() if isinstance(v, np.generic) else v
        out.append(None if isinstance(v, float) and math.isnan(v) else v)
    return out


def _layout(title: str, x_title: str | None, y_title: str | None, **extra: Any) -> dict[str, Any]:
    """The dashboard's look (as ``app.charts``): fixed height, legend right of the plot, titled axes."""
    layout: dict[str, Any] = {
        "title": {"text": title}, "height": HEIGHT, "margin": {"l": 10, "r": 10, "t": 60, "b": 10},
        "legend": {"orientation": "v", "yanchor": "top", "y": 1.0, "xanchor": "left", "x": 1.02},
    }
    if x_title is not None:
        layout["xaxis"] = {"title": {"text": x_title}, "automargin": True}
    if y_title is not None:
        layout["yaxis"] = {"title": {"text": y_title}, "automargin": True}
    return {**layout, **extra}


def shown(text: Any) -> str:
    """A spec's text as plotly draws it: plotly reads tags (<br>, <a href>) in labels, and a spec value (a
    data folder, a plugin param) is the user's, so its markup is escaped and its control characters dropped."""
    return html.escape(printable(str(text)), quote=False)


def config_text(config: str) -> str:
    """A configuration label with one field a line: ticks and legend entries stay narrow."""
    return "<br>".join(shown(part) for part in config.split(CONFIG_SEPARATOR))


def _rgba(hex_color: str, alpha: float) -> str:
    red, green, blue = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red}, {green}, {blue}, {alpha})"


# ---------------------------------------------------------------- parallel coordinates
def _dimension(field: str, values: pd.Series, numeric: bool) -> dict[str, Any]:
    """A parcoords axis: numbers as they are; anything else as category codes with the values as tick text."""
    if numeric:
        return {"label": shown(field), "values": _values(values.astype(float))}
    categories = sorted({value_key(v): v for v in values}.items(), key=lambda kv: str(kv[1]))
    code = {key: i for i, (key, _) in enumerate(categories)}
    return {"label": shown(field), "values": [code[value_key(v)] for v in values],
            "tickvals": list(range(len(categories))), "ticktext": [shown(v) for _, v in categories],
            "range": [-0.5, len(categories) - 0.5]}


def parcoords_figure(frame: pd.DataFrame, fields: list[str], numeric: Iterable[str], target: str) -> Figure:
    """One line per run over every varied field, the last axis and the colour its ``target`` accuracy (%).

    Runs without a target value are left out (a line needs its colour); ValueError when none has one.
    """
    label = f"{TARGET_LABELS.get(target, target)} (%)"
    runs = frame[frame[target].notna()]
    if runs.empty:
        raise ValueError(f"no selected run has a {TARGET_LABELS.get(target, target)} yet")
    numeric = set(numeric)
    accuracy = _values(runs[target].astype(float) * 100.0)
    dimensions = [_dimension(f, runs[f], f in numeric) for f in fields]
    dimensions.append({"label": label, "values": accuracy})
    trace = {"type": "parcoords", "dimensions": dimensions, "labelangle": LABEL_ANGLE,
             "line": {"color": accuracy, "colorscale": ACCURACY_SCALE, "showscale": True,
                      "colorbar": {"title": {"text": label}}}}
    # The slanted axis labels rise above the plot (and the first reaches left of it): the margins keep them
    # clear of the title and the page's edge.
    return {"data": [trace], "layout": _layout(f"Spec fields and {label} of {len(runs)} runs", None, None,
                                               margin={"l": 90, "r": 40, "t": 150, "b": 30})}


# ---------------------------------------------------------------- parameter importance
def importance_figure(table: pd.DataFrame) -> Figure:
    """Grouped bars per field: |Spearman rho| and random-forest importance, most important first."""
    fields = [shown(f) for f in table["field"]]
    data = [
        {"type": "bar", "name": "|Spearman ρ|", "x": fields, "y": _values(table["abs_spearman"]),
         "marker": {"color": SPEARMAN_COLOR}, "hovertemplate": "%{x}: |ρ| = %{y:.2f}<extra></extra>"},
        {"type": "bar", "name": "random-forest importance", "x": fields, "y": _values(table["rf_importance"]),
         "marker": {"color": FOREST_COLOR}, "hovertemplate": "%{x}: importance %{y:.2f}<extra></extra>"},
    ]
    layout = _layout("Parameter importance", "spec field", "importance (0 to 1)", barmode="group")
    layout["yaxis"]["range"] = [0, 1]
    return {"data": data, "layout": layout}


# ---------------------------------------------------------------- mean +- std bands over seeds
def band_figure(bands: pd.DataFrame, key: str) -> Figure:
    """Per configuration, its mean curve of ``key`` over epochs and a mean +- std band (none for one run).
    ValueError when ``bands`` is empty."""
    if bands.empty:
        raise ValueError(f"no selected run has logged {key} yet")
    data: list[dict[str, Any]] = []
    for index, (config, rows) in enumerate(bands.groupby("config")):  # colours by configuration name
        rows = rows.sort_values("epoch")
        color = series_color(index)
        epochs = _values(rows["epoch"])
        mean = display_values(key, rows["mean"].to_numpy(dtype=float))
        std = display_values(key, rows["std"].fillna(0.0).to_numpy(dtype=float))
        if (std > 0).any():
            outline = np.r_[mean + std, (mean - std)[::-1]]  # up the upper edge, back along the lower one
            data.append({"type": "scatter", "mode": "lines", "x": epochs + epochs[::-1], "y": _values(outline),
                         "fill": "toself", "fillcolor": _rgba(color, BAND_OPACITY), "line": {"width": 0},
                         "hoverinfo": "skip", "showlegend": False, "legendgroup": config, "name": f"{config} ± std"})
        data.append({"type": "scatter", "mode": "lines+markers", "name": config_text(config), "legendgroup": config,
                     "x": epochs, "y": _values(mean), "line": {"color": color, "width": 2}, "marker": {"color": color},
                     "customdata": [[s, n] for s, n in zip(_values(std), _values(rows["n"]))],
                     "hovertemplate": "%{y:.3g} ± %{customdata[0]:.2g} (n=%{customdata[1]})"})
    last = int(bands["epoch"].max())
    layout = _layout(f"{capitalised(metric_title(key))}: mean ± std over seeds", "epoch", axis_title(key),
                     hovermode="x unified")
    layout["xaxis"].update(tick0=0, dtick=max(1, math.ceil((last + 1) / 10)), rangemode="nonnegative")
    return {"data": data, "layout": layout}


# ---------------------------------------------------------------- final path weights
def path_weights_figure(table: pd.DataFrame, path_ids: list[str]) -> Figure:
    """Grouped bars: per configuration (x), the final weight its weighting gave each path, in the path's colour.
    ValueError when ``table`` is empty."""
    if table.empty:
        raise ValueError("no selected run has logged a path weight (weight/path:<id>) yet")
    configs = [config_text(str(c)) for c in table.index]
    data = [{"type": "bar", "name": path_id, "x": configs, "y": _values(table[path_id]),
             "marker": {"color": path_color(path_id, path_ids)},
             "hovertemplate": f"{path_id}: %{{y:.3g}}<extra></extra>"} for path_id in table.columns]
    return {"data": data, "layout": _layout("Final weight of each path", "configuration", "final path weight",
                                            barmode="group")}
