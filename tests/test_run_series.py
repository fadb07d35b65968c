"""The Live page's in-memory series: incremental reads from the store and what the charts are given."""
from __future__ import annotations

from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from app import charts, queries
from app.run_series import RunSeries, Series, display_series
from engine.store import Store, init_workspace
from engine.vocabulary import SYS_CPU_PERCENT, SYS_RSS_MB
from synthetic_runs import spec_yaml


def logged(step: int, loss: float) -> list[tuple]:
    """What a one-path run logs at ``step`` (epochs of 20 steps)."""
    epoch = step // 20
    return [("main", step, epoch, "loss/path:p-logits", loss), ("main", step, epoch, "weight/path:p-logits", 2.0),
            ("main", step, epoch, "time/student", 3.0), ("main", step, epoch, "time/data", 1.0)]


@pytest.fixture
def store(tmp_path: Path):
    init_workspace(tmp_path)
    with closing(Store(tmp_path)) as opened:
        yield opened


def test_refresh_reads_only_new_rows_and_restarts_with_a_new_attempt(store: Store) -> None:
    run_id = store.create_run(spec_yaml(), name="r")
    other = store.create_run(spec_yaml(), name="other")
    store.add_metrics(run_id, [r for step in range(0, 50, 10) for r in logged(step, 1.0)])
    series = RunSeries()
    series.refresh(store, run_id, attempts=1)
    first = series.display_frame("main")
    store.add_metrics(other, logged(60, 9.0))  # another run's rows in between are skipped
    store.add_metrics(run_id, logged(50, 0.5))
    _, watermark = queries.metric_series_since(store, run_id, 0)
    new, _ = queries.metric_series_since(store, run_id, watermark - 4)
    assert set(new) == {("main", k) for _, _, _, k, _ in logged(50, 0.5)}  # only the rows past the watermark
    series.refresh(store, run_id, attempts=1)
    frame = series.display_frame("main")
    assert frame is not first  # new rows invalidate the cached frame
    loss = frame[frame["key"] == "loss/path:p-logits"]
    assert list(loss["step"]) == [0, 10, 20, 30, 40, 50] and list(loss["value"])[-1] == 0.5
    assert series.latest("main", "loss/path:p-logits") == 0.5
    assert series.display_frame("main") is frame  # nothing new: the same frame, not rebuilt
    # a resumed attempt deletes rows after its checkpoint and logs them again: everything is read afresh
    store.delete_metrics_after(run_id, "main", 0)
    store.add_metrics(run_id, logged(20, 0.7))
    series.refresh(store, run_id, attempts=2)
    frame = series.display_frame("main")
    assert list(frame.loc[frame["key"] == "loss/path:p-logits", "step"]) == [0, 10, 20]


def test_display_series_downsamples_keeps_spikes_and_adds_weighted_losses() -> None:
    n = 50_000
    steps = np.arange(n)
    loss = np.linspace(2.0, 1.0, n)
    loss[31_337] = 40.0
    series = {"loss/path:a": Series(steps, steps // 1000, loss),
              "weight/path:a": Series(steps, steps // 1000, np.full(n, 0.5)),
              "acc/val": Series(np.array([999, 1999]), np.array([0, 1]), np.array([0.5, 0.6]))}
    shown = display_series(series)
    assert len(shown["loss/path:a"].step) <= charts.MAX_POINTS
    assert shown["loss/path:a"].value.max() == 40.0
    weighted = shown[charts.WEIGHTED_PREFIX + "a"]
    assert weighted.value.max() == pytest.approx(20.0)  # computed at full resolution, then downsampled
    assert list(shown["acc/val"].value) == [0.5, 0.6]  # epoch metrics are drawn whole


def test_display_series_puts_step_timings_on_one_grid() -> None:
    data = Series(np.arange(0, 1000, 10), np.zeros(100, dtype=np.int64), np.full(100, 1.0))
    student = Series(np.arange(0, 991, 5), np.zeros(199, dtype=np.int64), np.full(199, 3.0))  # logged twice as often
    shown = display_series({"time/data": data, "time/student": student})
    assert np.array_equal(shown["time/data"].step, shown["time/student"].step)
    assert len(shown["time/data"].step) <= charts.SHARE_CELLS
    assert np.allclose(shown["time/student"].value, 3.0)


def test_smoothing_replaces_step_series_but_not_epoch_metrics() -> None:
    steps = np.arange(0, 5_001)
    series = {"loss/total": Series(steps, steps // 1000, np.sin(steps / 300.0)),
              "acc/val": Series(np.array([999, 1999]), np.array([0, 1]), np.array([0.5, 0.6]))}
    shown = display_series(series, smoothing=500)
    x, y = charts.smooth_on_grid(steps, np.sin(steps / 300.0), 500)
    assert np.array_equal(shown["loss/total"].step, x) and np.allclose(shown["loss/total"].value, y)
    assert list(shown["acc/val"].value) == [0.5, 0.6]


def test_the_first_read_of_a_long_run_takes_every_kth_step_and_keeps_series_aligned(store: Store) -> None:
    run_id = store.create_run(spec_yaml(), name="long")
    rows = [r for step in range(0, 10_000, 10) for r in logged(step, 1.0)]  # 1,000 steps
    rows += [("main", s, s // 20, "acc/val", 0.5) for s in range(19, 10_000, 1_000)]  # per epoch: 10 rows
    rows += [("main", s, s // 20, SYS_CPU_PERCENT, 50.0) for s in (0, 30, 40, 90, 150, 170, 200)]  # by time
    store.add_metrics(run_id, rows)
    found, watermark = queries.metric_series_first(store, run_id, points=100)
    steps = {key: found[("main", key)][0] for _, key in found}
    loss = steps["loss/path:p-logits"]
    assert len(loss) <= 101 and loss[0] == 0 and loss[-1] == 9_990  # every 10th logged step, and the last one
    assert set(np.diff(loss[:-1])) == {100}
    assert all(np.array_equal(steps[key], loss) for key in ("weight/path:p-logits", "time/student", "time/data"))
    assert len(steps["acc/val"]) == 10 and len(steps[SYS_CPU_PERCENT]) == 7  # short series: whole
    whole, newest = queries.metric_series_since(store, run_id, 0)
    assert newest == watermark and len(whole[("main", "loss/path:p-logits")][0]) == 1_000


def test_a_long_irregular_series_is_read_whole(store: Store) -> None:
    run_id = store.create_run(spec_yaml(), name="irregular")
    sampled = np.cumsum(np.random.default_rng(0).integers(1, 4, 300)) * 5  # by time: irregular logged steps
    store.add_metrics(run_id, [("main", int(s), 0, SYS_RSS_MB, 900.0) for s in sampled])
    found, _ = queries.metric_series_first(store, run_id, points=100)
    assert np.array_equal(found[("main", SYS_RSS_MB)][0], sampled)


def test_live_reads_a_long_run_downsampled_once_then_adds_every_new_row(store: Store) -> None:
    run_id = store.create_run(spec_yaml(), name="long")
    logged = 2 * queries.FIRST_READ_POINTS + 2  # 4,002 logged steps: the first read takes every third
    store.add_metrics(run_id, [("main", step, 0, "loss/total", 1.0) for step in range(logged)])
    series = RunSeries()
    series.refresh(store, run_id, attempts=1)
    first = list(series.display_frame("main")["step"])
    assert first[:3] == [0, 3, 6] and first[-2:] == [3_999, 4_001] and len(first) == 1_335
    store.add_metrics(run_id, [("main", step, 0, "loss/total", 0.5) for step in range(4_010, 4_013)])
    series.refresh(store, run_id, attempts=1)
    steps = list(series.display_frame("main")["step"])
    assert steps[-4:] == [4_001, 4_010, 4_011, 4_012] and series.latest("main", "loss/total") == 0.5
