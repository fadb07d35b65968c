"""Chart builders: pure functions from metric DataFrames to plotly figures.

No Streamlit here, so every builder is unit-tested and timed on its own. Metric frames
are in the store's long format (columns step, epoch, key, value; plus run_id for
overlays). Traces are SVG (Scatter), not WebGL: a browser keeps about 16 WebGL contexts a page and plotly
takes three per WebGL chart, so Live's charts with those of its inline teachers' phases went blank past the cap.
Long runs stay responsive because series longer than ``MAX_POINTS`` are reduced with a min/max-per-bucket
downsample that keeps the spikes it is given (Live's
first read of a long run is strided in SQL, app/queries.metric_series_first, so a spike between the steps read of
its history is not among them; every row logged since is).
Smoothing averages over a fixed grid of steps (not over points), so a smoothed curve is
the same however densely its series was logged or downsampled. The Live page's charts are
built as plain dicts ("*_spec"; ``unvalidated`` draws one), since plotly's validation of graph
objects was half of a Live poll; the "*_figure" functions wrap the same dicts, validated, for
the other pages and the reports.
"""
from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from app.colors import (
    SPLIT_COLORS, TASK_LOSS_COLOR, TOTAL_LOSS_COLOR, path_color, section_color, series_color, term_colors,
)
from app.metric_names import (  # noqa: F401  (pages, tests and the sweep charts read these names from here too)
    SYSTEM_NAMES, WEIGHTED_TERM_PREFIX, axis_title, capitalised, display_values, metric_title,
)
from app.terms import ordered_terms, path_of, term_label
from engine.vocabulary import (  # noqa: F401  (pages and tests read these names from here too)
    ACC_KEYS, LOSS_PREFIX, PATH_PREFIX, PATH_WEIGHT_PREFIX, TASK, SECTION_LABELS, SYS_CPU_PERCENT, SYS_GPU_MEM_MB,
    SYS_GPU_UTIL_PERCENT, SYS_MEM_PERCENT, SYS_RSS_MB, THROUGHPUT_KEY, TIME_PREFIX, TIME_SECTIONS, TOTAL_LOSS, VAL_LOSS,
    WEIGHT_PREFIX,
)

MAX_POINTS = 2000
TEMPLATE = "plotly_white"
# Every dashboard figure uses this template. As the default, plotly attaches it to each new figure
# unvalidated; naming it per figure validates and deep-copies it each time (about 35 ms a figure).
pio.templates.default = TEMPLATE
GROUP_OFFSET = 0.1  # x offset of a run's points (left) and its combination's mean (right)
WEIGHTED_PREFIX = f"{WEIGHTED_TERM_PREFIX}{PATH_PREFIX}"  # a path's own term: "weighted/path:<id>"
TOTAL_NAME, VAL_NAME = TOTAL_LOSS[len(LOSS_PREFIX):], VAL_LOSS[len(LOSS_PREFIX):]  # logged losses that are no terms
SMOOTHING_CELLS = 5  # grid cells per smoothing window: the centred mean runs over this many cells
SHARE_CELLS = 200  # about this many grid cells across a run in the step-time chart
# Keys logged once per epoch: drawn against epochs, since steps per epoch differ between runs.
EPOCH_KEYS = frozenset({*ACC_KEYS, VAL_LOSS})


def minmax_indices(values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Sorted positions to keep so at most ``max_points`` of ``values`` (no NaN) remain: each bucket's min and max.

    Averaging or striding would hide the loss spikes a user is looking for; min/max keeps them.
    Buckets are equal runs of consecutive points, found with one reshape (the last is padded with its
    final value, so a position in the padding stands for the last point).
    """
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    size = -(-n // max(1, max_points // 2))  # points per bucket, rounded up
    rows = np.empty(-(-n // size) * size)
    rows[:n], rows[n:] = values, values[-1]
    rows = rows.reshape(-1, size)
    offsets = np.arange(len(rows)) * size
    lowest, highest = rows.argmin(axis=1) + offsets, rows.argmax(axis=1) + offsets
    kept = np.minimum(np.stack([np.minimum(lowest, highest), np.maximum(lowest, highest)], axis=1).ravel(), n - 1)
    return kept[np.concatenate([[True], kept[1:] != kept[:-1]])]


def series_xy(series: pd.DataFrame, x: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, value) arrays of one series in x order, without its NaN values."""
    return _sorted_finite(series[x].to_numpy(), series["value"].to_numpy(dtype=float))


def key_xy(metrics: pd.DataFrame, key: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """``series_xy`` of one key of a long frame, taken with a numpy mask: no DataFrame is copied per series."""
    mask = (metrics["key"] == key).to_numpy()
    return _sorted_finite(metrics[x].to_numpy()[mask], metrics["value"].to_numpy(dtype=float)[mask])


def _sorted_finite(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isnan(ys)
    order = np.argsort(xs[keep], kind="stable")
    return xs[keep][order], ys[keep][order]


def grid_width(span: float, cells: int) -> float:
    """A round cell width (1, 2 or 5 x 10^k steps, at least 1) giving at most about ``cells`` cells over ``span``.

    Round widths change only at thresholds, so a live run's grid stays put while it grows.
    """
    target = max(span / max(cells, 1), 1.0)
    power = 10.0 ** math.floor(math.log10(target))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= target)


def _area_until(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Integral from x[0] to each ``at`` (within [x[0], x[-1]]) of the straight lines through (x, y)."""
    cumulative = np.concatenate([[0.0], np.cumsum(np.diff(x) * (y[1:] + y[:-1]) / 2)])
    i = np.clip(np.searchsorted(x, at, side="right") - 1, 0, len(x) - 2)
    dx = at - x[i]
    slope = (y[i + 1] - y[i]) / (x[i + 1] - x[i])
    return cumulative[i] + dx * (y[i] + slope * dx / 2)


def cell_means(steps: np.ndarray, values: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """(centre, mean) of the series over each cell [k*width, (k+1)*width) of a grid anchored at step 0.

    The mean is the area under the series' straight-line interpolation divided by the covered
    length, not the mean of the points in the cell: sampling every step or every tenth step
    gives the same value, where a mean of points would lean towards wherever points fall.
    """
    x, y = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if len(x) < 2:
        return x, y
    first, last = math.floor(x[0] / width), max(math.ceil(x[-1] / width), math.floor(x[0] / width) + 1)
    edges = np.clip(np.arange(first, last + 1) * width, x[0], x[-1])
    covered = np.diff(edges)
    keep = covered > 0
    means = np.diff(_area_until(x, y, edges))[keep] / covered[keep]
    return ((edges[:-1] + edges[1:]) / 2)[keep], means


def smooth_on_grid(steps: np.ndarray, values: np.ndarray, window: float) -> tuple[np.ndarray, np.ndarray]:
    """A centred moving average over ``window`` steps, evaluated on a fixed grid of window/5-step cells."""
    centres, means = cell_means(steps, values, window / SMOOTHING_CELLS)
    # Dividing by the number of cells actually summed keeps the ends unbiased (no zero padding).
    return centres, _centred_sums(means, SMOOTHING_CELLS) / _centred_sums(np.ones_like(means), SMOOTHING_CELLS)


def _centred_sums(values: np.ndarray, width: int) -> np.ndarray:
    """Sums over a centred window of ``width`` cells, one per cell, also when there are fewer cells than the
    window (np.convolve's "same" mode then returns ``width`` values: a window longer than the run)."""
    start = (width - 1) // 2
    return np.convolve(values, np.ones(width))[start:start + len(values)]


def weighted_loss(loss_steps: np.ndarray, losses: np.ndarray, weight_steps: np.ndarray, weights: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(positions in the loss series, weight x loss) on the steps where both were logged; steps sorted ascending."""
    if np.array_equal(loss_steps, weight_steps):  # the usual case: logged together, so no search is needed
        return np.arange(len(losses)), losses * weights
    if len(weight_steps) == 0:
        return np.arange(0), losses[:0]
    at = np.clip(np.searchsorted(weight_steps, loss_steps), 0, len(weight_steps) - 1)
    both = np.flatnonzero(weight_steps[at] == loss_steps)
    return both, losses[both] * weights[at[both]]


def _style(title: str) -> dict[str, object]:
    """The dashboard's style: white (the default TEMPLATE), fixed height, legend right of the plot, unified hover.

    The legend stands beside the plot, where plotly widens the margin to fit it: above it, a run's
    eight or more path names wrap into rows that cover the title.
    """
    return dict(title=dict(text=title), height=340, margin=dict(l=10, r=10, t=50, b=10),
                legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.02), hovermode="x unified")


def styled(fig: go.Figure, title: str) -> go.Figure:
    """The dashboard's style on a figure built elsewhere (subplots)."""
    return fig.update_layout(**_style(title))


def _layout(x_title: str, y_title: str, title: str, log_y: bool = False) -> dict[str, object]:
    """A styled layout with titled axes, spelled out as plotly stores it (no "title_text" shorthand), so a
    figure of plain dicts needs no validation to be drawn."""
    return dict(_style(title), xaxis=dict(title=dict(text=x_title)),
                yaxis=dict(title=dict(text=y_title), type="log" if log_y else "linear"))


def base_figure(x_title: str, y_title: str, title: str, log_y: bool = False) -> go.Figure:
    """An empty styled figure with titled axes; laid out at construction, which costs a quarter of an update."""
    return go.Figure(layout=_layout(x_title, y_title, title, log_y))


def unvalidated(spec: dict) -> go.Figure:
    """A figure around a plain-dict ``spec`` that is not validated, to hand to ``st.plotly_chart``.

    Streamlit validates a dict it is given by building a figure from it (plotly.tools.
    return_figure_from_figure_or_data), which costs as much as building the figure with graph objects: half
    of a Live poll. A figure made with plotly's ``_validate=False`` passes through as it is (copied once).
    The chart builders' tests build validated figures from the same dicts, so the dicts stay valid.
    """
    return go.Figure(spec, _validate=False)


def _series_trace(xy: tuple[np.ndarray, np.ndarray], key: str, x: str, name: str, color: str,
                  dash: str = "solid", smoothing: float = 0.0) -> dict[str, object]:
    """One line of ``key`` from its (x, value) arrays, min/max downsampled; with ``smoothing`` (a window in
    steps) its fixed-grid moving average."""
    xs, ys = xy
    if smoothing and x == "step" and len(xs) > 1:
        xs, ys = smooth_on_grid(xs, ys, smoothing)
    keep = minmax_indices(ys)
    # A line through one point draws nothing: a short run's single system sample would leave an empty chart.
    markers = x == "epoch" or len(keep) == 1
    return dict(type="scatter", x=xs[keep], y=display_values(key, ys[keep]), name=name,
                mode="lines+markers" if markers else "lines", line=dict(color=color, dash=dash, width=2))


def _whole_epochs(epochs: pd.Series) -> dict[str, object]:
    """x-axis settings for epoch ticks at whole numbers (plotly would label a one-epoch run -1, -0.5, 0, ...)."""
    last = int(epochs.max()) if not epochs.empty else 0
    return dict(tick0=0, dtick=max(1, math.ceil((last + 1) / 10)), rangemode="nonnegative")


def _logged_terms(keys: pd.Series, prefix: str, path_ids: list[str]) -> list[str]:
    """The term names logged under ``prefix`` ('loss/', 'weight/', 'weighted/'), in ``terms.ordered_terms`` order."""
    found = {k[len(prefix):] for k in keys.unique() if k.startswith(prefix)} - {TOTAL_NAME, VAL_NAME}
    return ordered_terms(found, path_ids)


def term_color_map(names: list[str], path_ids: list[str]) -> dict[str, str]:
    """The task in its grey, a path's own term in the path's colour, every other term in ``TERM_PALETTE``."""
    others = term_colors([n for n in names if n != TASK and path_of(n) is None])

    def color(name: str) -> str:
        if name == TASK:
            return TASK_LOSS_COLOR
        path = path_of(name)
        return others[name] if path is None else path_color(path, path_ids)

    return {name: color(name) for name in names}


def _term_traces(metrics: pd.DataFrame, prefix: str, path_ids: list[str]) -> list[dict[str, object]]:
    """One line per term logged under ``prefix``, in the terms' order and colours."""
    names = _logged_terms(metrics["key"], prefix, path_ids)
    colors = term_color_map(names, path_ids)
    return [_series_trace(key_xy(metrics, prefix + name, "step"), prefix + name, "step", term_label(name),
                          colors[name]) for name in names]


def loss_spec(metrics: pd.DataFrame, path_ids: list[str], log_y: bool = False,
              title: str = "Training loss") -> dict[str, object]:
    """The total loss and every term's raw (unweighted) loss against the step; path colours follow ``path_ids``."""
    total = key_xy(metrics, TOTAL_LOSS, "step")
    data = [_series_trace(total, TOTAL_LOSS, "step", "total", TOTAL_LOSS_COLOR)] if len(total[0]) else []
    return dict(data=data + _term_traces(metrics, LOSS_PREFIX, path_ids),
                layout=_layout("step", "loss", title, log_y))


def loss_figure(metrics: pd.DataFrame, path_ids: list[str], log_y: bool = False,
                title: str = "Training loss") -> go.Figure:
    return go.Figure(loss_spec(metrics, path_ids, log_y, title))


# Weights spanning more than this ratio get a log axis: conventional weights run from 0.02 (CC) to 30,000 (PKT).
WEIGHT_LOG_SPAN = 100.0


def weight_spec(metrics: pd.DataFrame, path_ids: list[str]) -> dict[str, object]:
    """Every term's weight against the step (the weighting's, or the fixed base weight); on a log axis when the
    weights are all positive and span over two decades, where a linear axis would flatten all but the largest."""
    weights = metrics[metrics["key"].str.startswith(WEIGHT_PREFIX)]["value"].dropna()
    log_y = bool(len(weights)) and weights.min() > 0 and weights.max() / weights.min() > WEIGHT_LOG_SPAN
    return dict(data=_term_traces(metrics, WEIGHT_PREFIX, path_ids),
                layout=_layout("step", "weight (multiplies the raw loss)" + (" (log scale)" if log_y else ""),
                               "Term weights", log_y))


def weight_figure(metrics: pd.DataFrame, path_ids: list[str]) -> go.Figure:
    return go.Figure(weight_spec(metrics, path_ids))


def negative_terms(metrics: pd.DataFrame, prefix: str = WEIGHTED_TERM_PREFIX) -> list[str]:
    """The terms logged under ``prefix`` with a value below zero (an uncertainty weighting's log-variance
    regulariser): they take away from the total, and a log axis cannot draw them."""
    rows = metrics[metrics["key"].str.startswith(prefix) & (metrics["value"] < 0)]
    return sorted({key[len(prefix):] for key in rows["key"]} - {TOTAL_NAME, VAL_NAME})


def weighted_loss_spec(metrics: pd.DataFrame, path_ids: list[str]) -> dict[str, object]:
    """What each term adds to the total: the "weighted/<name>" series (weight x raw loss, see ``weighted_loss``)
    stacked, so the top of the stack is the total loss, drawn dashed over it as logged. What a term has below
    zero is stacked downwards from zero instead (stacked with the rest, it would cover the other bands), its
    part above zero upwards with the others (one legend entry for both): the total is then the top of the
    upper stack less the depth of the lower one. An uncertainty weighting's regulariser starts above zero and
    ends below.

    Stacked areas need a linear axis (on a log axis their heights would not add up) and the same steps in
    every term, which ``run_series.display_series`` keeps.
    """
    names = _logged_terms(metrics["key"], WEIGHTED_TERM_PREFIX, path_ids)
    colors = term_color_map(names, path_ids)
    data = []
    for name in names:
        xs, ys = key_xy(metrics, WEIGHTED_TERM_PREFIX + name, "step")
        split = (("terms", np.clip(ys, 0.0, None)), ("below", np.clip(ys, None, 0.0)))
        parts = [(group, part) for group, part in split if part.any()] or [("terms", ys)]
        for i, (group, values) in enumerate(parts):
            data.append(dict(type="scatter", x=xs, y=values, name=term_label(name), mode="lines", stackgroup=group,
                             legendgroup=name, showlegend=i == 0, line=dict(width=0.5, color=colors[name]),
                             hovertemplate="%{y:.4g}"))
    xs, ys = key_xy(metrics, TOTAL_LOSS, "step")
    if names and len(xs):
        data.append(dict(type="scatter", x=xs, y=ys, name="total loss (logged)", mode="lines",
                         line=dict(color=TOTAL_LOSS_COLOR, dash="dash", width=1.5), hovertemplate="%{y:.4g}"))
    layout = _layout("step", "weight × loss (adds up to the total loss)", "What each term adds to the total loss")
    return dict(data=data, layout=dict(layout, showlegend=True))


def weighted_loss_figure(metrics: pd.DataFrame, path_ids: list[str]) -> go.Figure:
    return go.Figure(weighted_loss_spec(metrics, path_ids))


def accuracy_spec(metrics: pd.DataFrame, title: str = "Accuracy") -> dict[str, object]:
    """Train/val/test accuracy per epoch, in percent."""
    dashes = {"train": "dot", "val": "dash", "test": "solid"}
    data = []
    for key in ACC_KEYS:
        xy = key_xy(metrics, key, "epoch")
        if len(xy[0]):
            split = key.split("/", 1)[1]
            data.append(_series_trace(xy, key, "epoch", split, SPLIT_COLORS[split], dashes[split]))
    layout = _layout("epoch", "accuracy (%)", title)
    layout["xaxis"].update(_whole_epochs(metrics.loc[metrics["key"].isin(ACC_KEYS), "epoch"]))
    return dict(data=data, layout=layout)


def accuracy_figure(metrics: pd.DataFrame, title: str = "Accuracy") -> go.Figure:
    return go.Figure(accuracy_spec(metrics, title))


def overlay_figure(metrics: pd.DataFrame, key: str, labels: dict[str, str], smoothing: float = 0.0) -> go.Figure:
    """One metric across several runs; ``labels`` maps run id -> legend name, in display order.

    ``smoothing``: a window in steps for per-step metrics (0: raw); runs logged at different
    intervals smooth onto the same grid, so their curves stay comparable.
    """
    x = "epoch" if key in EPOCH_KEYS else "step"
    fig = base_figure(x, axis_title(key), f"{capitalised(metric_title(key))} ({key})")
    fig.update_layout(showlegend=True)  # plotly hides a lone trace's legend, but it names the run
    selected = metrics[metrics["key"] == key]
    for index, (run_id, label) in enumerate(labels.items()):
        series = selected[selected["run_id"] == run_id]
        if not series.empty:
            # escaped: plotly reads tags in legend names, and a run's name is the user's (<a href=...>)
            fig.add_trace(_series_trace(series_xy(series, x), key, x, html.escape(label), series_color(index),
                                        smoothing=smoothing))
    if x == "epoch":
        fig.update_xaxes(**_whole_epochs(selected["epoch"]))
    return fig


def step_time_shares(metrics: pd.DataFrame) -> pd.DataFrame:
    """Share (%) of step time per section at each step where timings were logged; each row sums to 100.

    Columns are the sections, in the order a step runs them (unknown ones after); steps whose
    sections add up to nothing are left out rather than divided by zero.
    """
    times = metrics[metrics["key"].str.startswith(TIME_PREFIX)]
    table = times.groupby(["step", "key"], observed=True)["value"].mean().unstack()
    table.columns = [str(c)[len(TIME_PREFIX):] for c in table.columns]
    order = [s for s in TIME_SECTIONS if s in table.columns] + sorted(set(table.columns) - set(TIME_SECTIONS))
    table = table[order].fillna(0.0)
    total = table.sum(axis=1)
    return table[total > 0].div(total[total > 0], axis=0) * 100.0


def step_time_spec(shares: pd.DataFrame) -> dict[str, object]:
    """Stacked areas of ``step_time_shares``: where each step's time goes, over the run."""
    data = [dict(type="scatter",  # stacking needs SVG traces; a few hundred grid cells draw quickly
                 x=shares.index.to_numpy(), y=shares[section].to_numpy(), name=SECTION_LABELS.get(section, section),
                 mode="lines", stackgroup="time", line=dict(width=0.5, color=section_color(section)),
                 hovertemplate="%{y:.1f} %") for section in shares.columns]
    layout = _layout("step", "share of step time (%)", "Where step time goes")
    layout["yaxis"]["range"] = [0, 100]
    return dict(data=data, layout=layout)


def step_time_figure(shares: pd.DataFrame) -> go.Figure:
    return go.Figure(step_time_spec(shares))


# The System panel's lines: (key, legend name, colour index) per chart; the process in one colour, the GPU in
# another on both charts. The GPU's lines only where the run logged them.
SYSTEM_USE = tuple((key, SYSTEM_NAMES[key], color) for key, color in
                   ((SYS_CPU_PERCENT, 0), (SYS_MEM_PERCENT, 1), (SYS_GPU_UTIL_PERCENT, 2)))
SYSTEM_MEMORY = tuple((key, SYSTEM_NAMES[key], color) for key, color in ((SYS_RSS_MB, 0), (SYS_GPU_MEM_MB, 2)))


SYSTEM_CHARTS = ("system_use", "system_memory")


def system_specs(metrics: pd.DataFrame) -> dict[str, dict[str, object]]:
    """The System panel: CPU, memory and GPU use in percent, and memory in MiB, against the step
    (nothing when the run logged no system metrics)."""
    def traces(lines: tuple[tuple[str, str, int], ...]) -> list[dict[str, object]]:
        found = [(key_xy(metrics, key, "step"), key, name, color) for key, name, color in lines]
        return [_series_trace(xy, key, "step", name, series_color(color)) for xy, key, name, color in found
                if len(xy[0])]

    use, memory = traces(SYSTEM_USE), traces(SYSTEM_MEMORY)
    specs = {}
    if use:
        specs[SYSTEM_CHARTS[0]] = dict(data=use, layout=dict(
            _layout("step", "% (CPU: 100 = one core busy)", "CPU, memory and GPU use"), showlegend=True))
    if memory:
        specs[SYSTEM_CHARTS[1]] = dict(data=memory, layout=dict(_layout("step", "memory (MiB)", "Memory"),
                                                               showlegend=True))
    return specs


def live_figures(metrics: pd.DataFrame, path_ids: list[str], log_y: bool = False) -> dict[str, dict[str, object]]:
    """Every chart the Live page draws for one phase, by name, as plain-dict figures (``unvalidated`` draws
    one): what the page lays out and the bench times."""
    figures = {"loss": loss_spec(metrics, path_ids, log_y), "accuracy": accuracy_spec(metrics)}
    keys = metrics["key"]
    if keys.str.startswith(WEIGHT_PREFIX).any():
        figures["weights"] = weight_spec(metrics, path_ids)
        figures["weighted"] = weighted_loss_spec(metrics, path_ids)
    if keys.str.startswith(TIME_PREFIX).any():
        figures["step_time"] = step_time_spec(step_time_shares(metrics))
    return {**figures, **system_specs(metrics)}


def combination_accuracy_figure(runs: pd.DataFrame, summary: pd.DataFrame) -> go.Figure:
    """Final test accuracy per combination: every finished run as a point, and mean ± std (sample std).

    ``runs``: rows of finished runs (combination, test_acc_pct, name); ``summary``: ``queries.combination_summary``.
    Combination i sits at x = i with its runs just left of it and the mean just right, so the
    error bar never hides the points it summarises.
    """
    fig = base_figure("combination (path method · weighting)", "test accuracy (%)",
                      "Final test accuracy by combination")
    fig.update_layout(hovermode="closest", showlegend=True)
    order = list(summary["combination"])
    for index, name in enumerate(order):
        points = runs[runs["combination"] == name]
        fig.add_trace(go.Scatter(
            x=np.full(len(points), index - GROUP_OFFSET), y=points["test_acc_pct"].to_numpy(dtype=float),
            mode="markers", name=name, marker=dict(color=series_color(index), size=9, opacity=0.8),
            text=[html.escape(str(n)) for n in points["name"]], hovertemplate="%{text}<br>%{y:.2f} %<extra></extra>",
        ))
    fig.add_trace(go.Scatter(
        x=np.arange(len(order)) + GROUP_OFFSET, y=summary["mean"].to_numpy(dtype=float), text=order,
        mode="markers", name="mean ± std", marker=dict(color=TOTAL_LOSS_COLOR, size=9, symbol="diamond"),
        error_y=dict(type="data", array=summary["std"].fillna(0.0).to_numpy(dtype=float), thickness=2, width=8,
                     color=TOTAL_LOSS_COLOR),
        hovertemplate="%{text}: mean %{y:.2f} %<extra></extra>",
    ))
    fig.update_xaxes(tickvals=list(range(len(order))), ticktext=order, range=[-0.6, len(order) - 0.4])
    return fig
