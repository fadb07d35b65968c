"""Chart builders: pure functions from metric DataFrames to plotly figures.

No Streamlit here, so every builder is unit-tested and timed on its own. Metric frames
are in the store's long format (columns step, epoch, key, value; plus run_id for
overlays). Traces are WebGL (Scattergl) so long runs stay responsive, and series longer
than ``MAX_POINTS`` are reduced with a min/max-per-bucket downsample that keeps spikes.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.colors import SPLIT_COLORS, TASK_LOSS_COLOR, TOTAL_LOSS_COLOR, path_color, series_color

MAX_POINTS = 2000
PATH_LOSS_PREFIX = "loss/path:"
PATH_WEIGHT_PREFIX = "weight/path:"
ACC_KEYS = ("acc/train", "acc/val", "acc/test")
# Keys logged once per epoch: drawn against epochs, since steps per epoch differ between runs.
EPOCH_KEYS = frozenset({*ACC_KEYS, "loss/val"})


def minmax_downsample(frame: pd.DataFrame, x: str, y: str, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """At most ~max_points rows of ``frame`` (sorted by x), keeping each bucket's min and max of y.

    Averaging or striding would hide the loss spikes a user is looking for; min/max keeps them.
    """
    frame = frame.dropna(subset=[y]).sort_values(x).reset_index(drop=True)
    if len(frame) <= max_points:
        return frame
    buckets = max(1, max_points // 2)
    bucket = (np.arange(len(frame)) * buckets) // len(frame)
    grouped = frame[y].groupby(bucket)
    keep = np.union1d(grouped.idxmin().to_numpy(), grouped.idxmax().to_numpy())
    return frame.loc[keep]


def axis_title(key: str) -> str:
    """The y-axis title, with units, for a metric key."""
    if key.startswith("acc/"):
        return "accuracy (%)"
    if key.startswith("weight/"):
        return "path weight"
    if key == "lr":
        return "learning rate"
    return "loss"


def display_values(key: str, values: pd.Series) -> np.ndarray:
    """Values as shown: accuracies are stored as fractions and shown as percentages."""
    scale = 100.0 if key.startswith("acc/") else 1.0
    return values.to_numpy(dtype=float) * scale


def _figure(x_title: str, y_title: str, title: str, log_y: bool = False) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title=title,
        template="plotly_white",
        height=340,
        margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0.0),
        hovermode="x unified",
    )
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear")
    return fig


def _add_series(fig: go.Figure, series: pd.DataFrame, key: str, x: str, name: str, color: str,
                dash: str = "solid") -> None:
    series = minmax_downsample(series, x, "value")
    fig.add_trace(go.Scattergl(
        x=series[x].to_numpy(), y=display_values(key, series["value"]), name=name,
        mode="lines+markers" if x == "epoch" else "lines",
        line=dict(color=color, dash=dash, width=2),
    ))


def _whole_epochs(fig: go.Figure, epochs: pd.Series) -> None:
    """Epoch ticks at whole numbers (plotly would label a one-epoch run -1, -0.5, 0, ...)."""
    last = int(epochs.max()) if not epochs.empty else 0
    fig.update_xaxes(tick0=0, dtick=max(1, math.ceil((last + 1) / 10)), rangemode="nonnegative")


def _ordered_path_ids(keys: pd.Series, prefix: str, path_ids: list[str]) -> list[str]:
    """Path ids found under ``prefix``, in spec order first, then any unknown ones."""
    found = {k[len(prefix):] for k in keys.unique() if k.startswith(prefix)}
    return [p for p in path_ids if p in found] + sorted(found - set(path_ids))


def loss_figure(metrics: pd.DataFrame, path_ids: list[str], log_y: bool = False,
                title: str = "Training loss") -> go.Figure:
    """Total, task and per-path losses against the step; path colours follow ``path_ids``."""
    fig = _figure("step", "loss", title, log_y)
    fixed = (("loss/total", "total", TOTAL_LOSS_COLOR), ("loss/task", "task (CE)", TASK_LOSS_COLOR))
    for key, name, color in fixed:
        series = metrics[metrics["key"] == key]
        if not series.empty:
            _add_series(fig, series, key, "step", name, color)
    for pid in _ordered_path_ids(metrics["key"], PATH_LOSS_PREFIX, path_ids):
        key = PATH_LOSS_PREFIX + pid
        _add_series(fig, metrics[metrics["key"] == key], key, "step", pid, path_color(pid, path_ids))
    return fig


def weight_figure(metrics: pd.DataFrame, path_ids: list[str]) -> go.Figure:
    """The aggregator's weight of each path against the step."""
    fig = _figure("step", "path weight", "Path weights (aggregator)")
    for pid in _ordered_path_ids(metrics["key"], PATH_WEIGHT_PREFIX, path_ids):
        key = PATH_WEIGHT_PREFIX + pid
        _add_series(fig, metrics[metrics["key"] == key], key, "step", pid, path_color(pid, path_ids))
    return fig


def accuracy_figure(metrics: pd.DataFrame, title: str = "Accuracy") -> go.Figure:
    """Train/val/test accuracy per epoch, in percent."""
    fig = _figure("epoch", "accuracy (%)", title)
    dashes = {"train": "dot", "val": "dash", "test": "solid"}
    for key in ACC_KEYS:
        series = metrics[metrics["key"] == key]
        if not series.empty:
            split = key.split("/", 1)[1]
            _add_series(fig, series, key, "epoch", split, SPLIT_COLORS[split], dashes[split])
    _whole_epochs(fig, metrics.loc[metrics["key"].isin(ACC_KEYS), "epoch"])
    return fig


def overlay_figure(metrics: pd.DataFrame, key: str, labels: dict[str, str]) -> go.Figure:
    """One metric across several runs; ``labels`` maps run id -> legend name, in display order."""
    x = "epoch" if key in EPOCH_KEYS else "step"
    fig = _figure(x, axis_title(key), key)
    fig.update_layout(showlegend=True)  # plotly hides a lone trace's legend, but it names the run
    selected = metrics[metrics["key"] == key]
    for index, (run_id, label) in enumerate(labels.items()):
        series = selected[selected["run_id"] == run_id]
        if not series.empty:
            _add_series(fig, series, key, x, label, series_color(index))
    if x == "epoch":
        _whole_epochs(fig, selected["epoch"])
    return fig
