"""Chart builders on small frames, and the read-only queries on a synthetic store."""
from __future__ import annotations

from contextlib import closing

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from app import charts, queries
from app.colors import PALETTE, SPLIT_COLORS, TASK_LOSS_COLOR, TOTAL_LOSS_COLOR, path_color, series_color
from engine.store import Store
from synthetic_runs import PATH_IDS, RESULT, STEPS, add_finished_run, metric_rows, path_loss


def frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=queries.METRIC_COLUMNS)


@pytest.fixture
def main_metrics() -> pd.DataFrame:
    metrics = frame(metric_rows())
    return metrics[metrics["phase"] == "main"]


def by_name(fig: go.Figure) -> dict[str, go.Scattergl]:
    return {trace.name: trace for trace in fig.data}


def test_loss_figure_traces_colours_and_axes(main_metrics: pd.DataFrame) -> None:
    fig = charts.loss_figure(main_metrics, PATH_IDS)
    assert [t.name for t in fig.data] == ["total", "task (CE)", *PATH_IDS]  # spec order, not key order
    assert all(isinstance(t, go.Scattergl) for t in fig.data)
    traces = by_name(fig)
    assert traces["total"].line.color == TOTAL_LOSS_COLOR
    assert traces["task (CE)"].line.color == TASK_LOSS_COLOR
    assert traces["p-logits"].line.color == PALETTE[0]
    assert traces["p-hint"].line.color == PALETTE[1]
    assert list(traces["p-hint"].x) == STEPS
    assert list(traces["p-hint"].y) == pytest.approx([path_loss(1, s) for s in STEPS])
    assert fig.layout.xaxis.title.text == "step"
    assert fig.layout.yaxis.title.text == "loss"
    assert fig.layout.yaxis.type == "linear"
    assert charts.loss_figure(main_metrics, PATH_IDS, log_y=True).layout.yaxis.type == "log"


def test_path_keeps_its_colour_by_spec_position(main_metrics: pd.DataFrame) -> None:
    reordered = by_name(charts.loss_figure(main_metrics, list(reversed(PATH_IDS))))
    assert reordered["p-hint"].line.color == PALETTE[0]
    weights = by_name(charts.weight_figure(main_metrics, PATH_IDS))
    assert weights["p-hint"].line.color == path_color("p-hint", PATH_IDS) == PALETTE[1]
    assert path_color("unknown", PATH_IDS) == PALETTE[2]


def test_accuracy_figure_in_percent_per_epoch(main_metrics: pd.DataFrame) -> None:
    fig = charts.accuracy_figure(main_metrics)
    traces = by_name(fig)
    assert list(traces) == ["train", "val", "test"]
    assert list(traces["val"].y) == pytest.approx([70.0, 80.0])
    assert list(traces["val"].x) == [0, 1]
    assert traces["test"].line.color == SPLIT_COLORS["test"]
    assert fig.layout.xaxis.title.text == "epoch"
    assert fig.layout.yaxis.title.text == "accuracy (%)"


def test_overlay_figure_axes_follow_the_metric() -> None:
    rows = [("r1", "main", 5, 0, "loss/total", 1.0), ("r1", "main", 10, 0, "loss/total", 0.5),
            ("r2", "main", 5, 0, "loss/total", 2.0), ("r1", "main", 10, 0, "acc/val", 0.5),
            ("r2", "main", 20, 1, "acc/val", 0.6)]
    metrics = pd.DataFrame(rows, columns=["run_id", *queries.METRIC_COLUMNS])
    labels = {"r2": "second", "r1": "first"}
    loss = charts.overlay_figure(metrics, "loss/total", labels)
    assert [t.name for t in loss.data] == ["second", "first"]
    assert [t.line.color for t in loss.data] == [series_color(0), series_color(1)]
    assert loss.layout.xaxis.title.text == "step"
    acc = charts.overlay_figure(metrics, "acc/val", labels)
    assert acc.layout.xaxis.title.text == "epoch"
    assert acc.layout.yaxis.title.text == "accuracy (%)"
    assert list(by_name(acc)["second"].y) == pytest.approx([60.0])


def test_empty_metrics_give_empty_figures() -> None:
    empty = frame([])
    assert len(charts.loss_figure(empty, PATH_IDS).data) == 0
    assert len(charts.accuracy_figure(empty).data) == 0


def test_minmax_downsample_keeps_spikes() -> None:
    n = 10_000
    values = np.sin(np.arange(n) / 50.0)
    values[4321] = 50.0
    values[777] = -50.0
    series = pd.DataFrame({"step": np.arange(n)[::-1], "value": values[::-1]})  # unsorted input
    reduced = charts.minmax_downsample(series, "step", "value", max_points=500)
    assert len(reduced) <= 500
    assert reduced["step"].is_monotonic_increasing
    assert reduced["value"].max() == 50.0 and reduced["value"].min() == -50.0
    short = series.head(10)
    assert len(charts.minmax_downsample(short, "step", "value", max_points=500)) == 10


def test_axis_titles_name_units() -> None:
    assert charts.axis_title("acc/test") == "accuracy (%)"
    assert charts.axis_title("weight/path:a") == "path weight"
    assert charts.axis_title("lr") == "learning rate"
    assert charts.axis_title("loss/val") == "loss"


# ---------------------------------------------------------------- queries on a real store
def test_runs_frame_summarises_specs_and_results(tmp_path) -> None:
    first = add_finished_run(tmp_path, "first", aggregator="equal")
    second = add_finished_run(tmp_path, "second", aggregator="fixed")
    with closing(Store(tmp_path, readonly=True)) as store:
        runs = queries.runs_frame(store)
    assert list(runs["id"]) == [second, first]  # newest first
    row = runs.set_index("id").loc[first]
    assert row["status"] == "done"
    assert row["student"] == "mlp" and row["aggregator"] == "equal" and row["n_paths"] == 2
    assert row["path_ids"] == PATH_IDS
    assert row["test_acc_pct"] == pytest.approx(100 * RESULT["test_acc"])
    assert row["duration_s"] == RESULT["seconds"]
    assert row["label"] == f"first · {first} · done"


def test_metric_and_event_queries(tmp_path) -> None:
    run_id = add_finished_run(tmp_path)
    with closing(Store(tmp_path, readonly=True)) as store:
        metrics = queries.run_metrics(store, run_id)
        teacher = queries.run_metrics(store, run_id, phase="teacher:t")
        long = queries.metrics_long(store, [run_id])
        events = queries.run_events(store, run_id)
    assert list(metrics.columns) == queries.METRIC_COLUMNS
    assert len(metrics) == len(metric_rows())
    assert set(teacher["phase"]) == {"teacher:t"}
    assert queries.phases(metrics) == ["main", "teacher:t"]
    assert list(long.columns) == ["run_id", *queries.METRIC_COLUMNS]
    assert set(long["run_id"]) == {run_id}
    assert list(events["message"]) == ["run finished"]


def test_spec_summary_tolerates_broken_specs() -> None:
    assert queries.spec_summary("::: not yaml [")["student"] == "?"
    assert queries.spec_summary("- a list")["n_paths"] == 0
