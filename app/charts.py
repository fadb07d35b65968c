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
AGGREGATOR_OFFSET = 0.1  # x offset of a run's points (left) and its aggregator's mean (right)
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


def styled(fig: go.Figure, title: str) -> go.Figure:
    """The dashboard's style: white, fixed height, legend above the plot, unified hover."""
    return fig.update_layout(
        title=title,
        template="plotly_white",
        height=340,
        margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0.0),
        hovermode="x unified",
    )


def base_figure(x_title: str, y_title: str, title: str, log_y: bool = False) -> go.Figure:
    """An empty styled figure with titled axes."""
    fig = styled(go.Figure(), title)
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
    fig = base_figure("step", "loss", title, log_y)
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
    fig = base_figure("step", "path weight", "Path weights (aggregator)")
    for pid in _ordered_path_ids(metrics["key"], PATH_WEIGHT_PREFIX, path_ids):
        key = PATH_WEIGHT_PREFIX + pid
        _add_series(fig, metrics[metrics["key"] == key], key, "step", pid, path_color(pid, path_ids))
    return fig


def weighted_losses(metrics: pd.DataFrame, path_id: str) -> pd.DataFrame:
    """(step, value = weight x raw loss) of one path, on the steps where both were logged."""
    loss = metrics.loc[metrics["key"] == PATH_LOSS_PREFIX + path_id, ["step", "value"]]
    weight = metrics.loc[metrics["key"] == PATH_WEIGHT_PREFIX + path_id, ["step", "value"]]
    joined = loss.merge(weight, on="step", suffixes=("_loss", "_weight"))
    return joined.assign(value=joined["value_loss"] * joined["value_weight"])[["step", "value"]]


def weighted_loss_figure(metrics: pd.DataFrame, path_ids: list[str], log_y: bool = False) -> go.Figure:
    """What each path adds to the total: the aggregator's weight times the raw path loss."""
    fig = base_figure("step", "weighted loss (weight × loss)", "Weighted path losses", log_y)
    for pid in _ordered_path_ids(metrics["key"], PATH_WEIGHT_PREFIX, path_ids):
        series = weighted_losses(metrics, pid)
        if not series.empty:
            _add_series(fig, series, "loss", "step", pid, path_color(pid, path_ids))
    return fig


def accuracy_figure(metrics: pd.DataFrame, title: str = "Accuracy") -> go.Figure:
    """Train/val/test accuracy per epoch, in percent."""
    fig = base_figure("epoch", "accuracy (%)", title)
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
    fig = base_figure(x, axis_title(key), key)
    fig.update_layout(showlegend=True)  # plotly hides a lone trace's legend, but it names the run
    selected = metrics[metrics["key"] == key]
    for index, (run_id, label) in enumerate(labels.items()):
        series = selected[selected["run_id"] == run_id]
        if not series.empty:
            _add_series(fig, series, key, x, label, series_color(index))
    if x == "epoch":
        _whole_epochs(fig, selected["epoch"])
    return fig


def aggregator_accuracy_figure(runs: pd.DataFrame, summary: pd.DataFrame) -> go.Figure:
    """Final test accuracy per aggregator: every finished run as a point, and mean ± std (sample std).

    ``runs``: rows of finished runs (aggregator, test_acc_pct, name); ``summary``: ``queries.aggregator_summary``.
    Aggregator i sits at x = i with its runs just left of it and the mean just right, so the
    error bar never hides the points it summarises.
    """
    fig = base_figure("aggregator", "test accuracy (%)", "Final test accuracy by aggregator")
    fig.update_layout(hovermode="closest", showlegend=True)
    order = list(summary["aggregator"])
    for index, name in enumerate(order):
        points = runs[runs["aggregator"] == name]
        fig.add_trace(go.Scatter(
            x=np.full(len(points), index - AGGREGATOR_OFFSET), y=points["test_acc_pct"].to_numpy(dtype=float),
            mode="markers", name=name, marker=dict(color=series_color(index), size=9, opacity=0.8),
            text=points["name"].to_numpy(), hovertemplate="%{text}<br>%{y:.2f} %<extra></extra>",
        ))
    fig.add_trace(go.Scatter(
        x=np.arange(len(order)) + AGGREGATOR_OFFSET, y=summary["mean"].to_numpy(dtype=float), text=order,
        mode="markers", name="mean ± std", marker=dict(color=TOTAL_LOSS_COLOR, size=9, symbol="diamond"),
        error_y=dict(type="data", array=summary["std"].fillna(0.0).to_numpy(dtype=float), thickness=2, width=8,
                     color=TOTAL_LOSS_COLOR),
        hovertemplate="%{text}: mean %{y:.2f} %<extra></extra>",
    ))
    fig.update_xaxes(tickvals=list(range(len(order))), ticktext=order, range=[-0.6, len(order) - 0.4])
    return fig
