"""One run's metric series in memory, topped up with only the rows logged since the last read.

The Live page polls every two seconds. Reading a long run whole costs seconds (8 paths x 50,000
logged steps are 1.35 million rows), so the first read takes about ``queries.FIRST_READ_POINTS`` logged
steps of each series (``queries.metric_series_first``) and later reads only the new rows, well under
a millisecond. What the charts need is then cut down here, on numpy arrays, before any DataFrame
is built: min/max downsampling (or fixed-grid smoothing), each term's weight x loss computed at
full resolution and kept on common steps, and step timings averaged onto one grid, so both stack.
No Streamlit here: ``app.cached.run_series`` shares one instance per run between sessions.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd

from app import charts, queries
from engine.store import Store


@dataclass(frozen=True)
class Series:
    step: np.ndarray  # int64, ascending
    epoch: np.ndarray  # int64
    value: np.ndarray  # float64; NaN where the store holds NULL

    def extended(self, newer: Series) -> Series:
        step = np.concatenate([self.step, newer.step])
        epoch = np.concatenate([self.epoch, newer.epoch])
        value = np.concatenate([self.value, newer.value])
        if len(self.step) and len(newer.step) and newer.step[0] <= self.step[-1]:
            order = np.argsort(step, kind="stable")  # rare: a key logged out of step order
            step, epoch, value = step[order], epoch[order], value[order]
        return Series(step, epoch, value)

    def finite(self) -> Series:
        keep = ~np.isnan(self.value)
        return self if keep.all() else Series(self.step[keep], self.epoch[keep], self.value[keep])

    def take(self, positions: np.ndarray) -> Series:
        return Series(self.step[positions], self.epoch[positions], self.value[positions])

    def on_grid(self, steps: np.ndarray, values: np.ndarray) -> Series:
        """Values at grid positions, each given the epoch of the last logged step at or before it."""
        before = np.clip(np.searchsorted(self.step, steps, side="right") - 1, 0, len(self.step) - 1)
        return Series(steps, self.epoch[before], values)


class RunSeries:
    """Every (phase, key) series of one run; safe to share between the script threads of several sessions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: int | None = None
        self._last_rowid = 0
        self._series: dict[tuple[str, str], Series] = {}
        self._frames: dict[tuple[str, float], pd.DataFrame] = {}  # display frames of the data as it is now

    def refresh(self, store: Store, run_id: str, attempts: int) -> None:
        """Read what was logged since the last refresh; everything (downsampled) again once the run starts a new
        attempt."""
        with self._lock:
            if attempts != self._attempts:  # a resumed attempt deletes and re-logs rows after its checkpoint
                self._attempts, self._last_rowid, self._series, self._frames = attempts, 0, {}, {}
            if self._last_rowid:
                new, self._last_rowid = queries.metric_series_since(store, run_id, self._last_rowid)
            else:  # a long run's past is read downsampled; every row logged from now on is added whole
                new, self._last_rowid = queries.metric_series_first(store, run_id)
            for name, arrays in new.items():
                newer = Series(*arrays)
                self._series[name] = self._series[name].extended(newer) if name in self._series else newer
            if new:
                self._frames = {}

    def phases(self) -> list[str]:
        with self._lock:
            return queries.phases(phase for phase, _ in self._series)

    def latest(self, phase: str, key: str) -> float | None:
        """The last logged (non-NaN) value of a series, or None."""
        with self._lock:
            series = self._series.get((phase, key))
        values = series.finite().value if series is not None else np.empty(0)
        return float(values[-1]) if len(values) else None

    def display_frame(self, phase: str, smoothing: float = 0.0) -> pd.DataFrame:
        """The phase's series as the chart builders take them (long format), cut down to what is drawn.

        ``smoothing``: a window in steps (0: raw min/max-downsampled series). Cached until new rows arrive.
        """
        with self._lock:
            if (phase, smoothing) not in self._frames:
                own = {key: s.finite() for (p, key), s in self._series.items() if p == phase}
                self._frames[(phase, smoothing)] = long_frame(phase, display_series(own, smoothing))
            return self._frames[(phase, smoothing)]


def with_weighted_losses(series: dict[str, Series]) -> dict[str, Series]:
    """Adds "weighted/<name>" (weight x raw loss) for each term with both a loss and a weight, at full resolution."""
    out = dict(series)
    for key, weight in series.items():
        if not key.startswith(charts.WEIGHT_PREFIX):
            continue
        name = key[len(charts.WEIGHT_PREFIX):]
        loss = series.get(charts.LOSS_PREFIX + name)
        if loss is not None:
            positions, values = charts.weighted_loss(loss.step, loss.value, weight.step, weight.value)
            out[charts.WEIGHTED_TERM_PREFIX + name] = Series(loss.step[positions], loss.epoch[positions], values)
    return out


def display_series(series: dict[str, Series], smoothing: float = 0.0) -> dict[str, Series]:
    """Each series as drawn: epoch metrics whole, step timings as means over one shared grid (so their
    shares stack), weighted terms cut down together (so they stack too), everything else min/max
    downsampled, or first smoothed when ``smoothing`` is set."""
    series = with_weighted_losses(series)
    timed = [s for key, s in series.items() if key.startswith(charts.TIME_PREFIX) and len(s.step)]
    width = charts.grid_width(max(int(s.step[-1]) for s in timed), charts.SHARE_CELLS) if timed else 1.0
    weighted = {key: s for key, s in series.items() if key.startswith(charts.WEIGHTED_TERM_PREFIX)}
    shown = stacked_terms(weighted, series.get(charts.TOTAL_LOSS), smoothing)
    for key, s in series.items():
        if key in shown:
            continue
        if key in charts.EPOCH_KEYS or len(s.step) < 2:
            shown[key] = s
        elif key.startswith(charts.TIME_PREFIX):
            shown[key] = s.on_grid(*charts.cell_means(s.step, s.value, width))
        else:
            shown[key] = cut_down(s, smoothing)
    return shown


def cut_down(s: Series, smoothing: float) -> Series:
    """One series min/max downsampled, first smoothed on the fixed grid when ``smoothing`` is set."""
    if len(s.step) < 2:
        return s
    if smoothing:
        s = s.on_grid(*charts.smooth_on_grid(s.step, s.value, smoothing))
    return s.take(charts.minmax_indices(s.value))


def stacked_terms(weighted: dict[str, Series], total: Series | None, smoothing: float) -> dict[str, Series]:
    """The weighted terms (and the total loss drawn over their stack), kept on the same steps so a stacked
    chart adds them up point by point.

    The engine logs every term and the total at the same steps. Smoothing puts them on the same fixed
    grid; raw series are downsampled at the positions that keep the terms' sum's minima and maxima, so a
    spike of the total stays visible in the stack. Series logged at other steps (an edited run) are cut
    alone.
    """
    joint = {**weighted, charts.TOTAL_LOSS: total} if weighted and total is not None else dict(weighted)
    steps = [s.step for s in joint.values()]
    if not weighted or any(not np.array_equal(s, steps[0]) for s in steps):
        return {key: cut_down(s, smoothing) for key, s in joint.items()}
    if smoothing and len(steps[0]) > 1:
        joint = {key: s.on_grid(*charts.smooth_on_grid(s.step, s.value, smoothing)) for key, s in joint.items()}
    keep = charts.minmax_indices(np.sum([joint[key].value for key in weighted], axis=0))
    return {key: s.take(keep) for key, s in joint.items()}


def long_frame(phase: str, series: dict[str, Series]) -> pd.DataFrame:
    """The store's long format (phase, step, epoch, key, value). Phase and key are categorical: the charts
    filter the frame once per series, and taking rows of a categorical is a plain integer copy."""
    if not series:
        return pd.DataFrame(columns=queries.METRIC_COLUMNS)
    keys = list(series)
    codes = np.repeat(np.arange(len(keys)), [len(series[k].step) for k in keys])
    return pd.DataFrame({
        "phase": pd.Categorical.from_codes(np.zeros(len(codes), dtype=np.int64), categories=[phase]),
        "step": np.concatenate([series[k].step for k in keys]),
        "epoch": np.concatenate([series[k].epoch for k in keys]),
        "key": pd.Categorical.from_codes(codes, categories=keys),
        "value": np.concatenate([series[k].value for k in keys]),
    }, columns=queries.METRIC_COLUMNS)
