"""Chart builders on small frames, and the read-only queries on a synthetic store."""
from __future__ import annotations

from contextlib import closing

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from app import charts, queries
from app.colors import (PALETTE, SPLIT_COLORS, TASK_LOSS_COLOR, TERM_PALETTE, TOTAL_LOSS_COLOR, path_color,
                        section_color, series_color, term_colors)
from app.run_series import Series, display_series, long_frame
from app.terms import ordered_terms, term_label
from engine.store import Store
from synthetic_runs import (
    PATH_IDS, RESULT, STEPS, TERMS, add_finished_run, legacy_spec_yaml, metric_rows, path_loss, term_loss,
    term_metric_rows, term_weight,
)


def frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=queries.METRIC_COLUMNS)


@pytest.fixture
def main_metrics() -> pd.DataFrame:
    metrics = frame(metric_rows())
    return metrics[metrics["phase"] == "main"]


def by_name(fig: go.Figure) -> dict[str, go.Scatter]:
    return {trace.name: trace for trace in fig.data}


def test_loss_figure_traces_colours_and_axes(main_metrics: pd.DataFrame) -> None:
    fig = charts.loss_figure(main_metrics, PATH_IDS)
    assert [t.name for t in fig.data] == ["total", "task (CE)", *PATH_IDS]  # spec order, not key order
    assert all(isinstance(t, go.Scatter) for t in fig.data)  # SVG: WebGL contexts run out on a page of charts
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


def test_every_term_is_drawn_with_a_readable_label_and_a_consistent_colour() -> None:
    metrics = frame(term_metric_rows())
    labels = ["task (CE)", "amtml · fused KD", "amtml · hint (p-hint)", "uncertainty · regulariser"]
    loss = by_name(charts.loss_figure(metrics, PATH_IDS))
    assert list(loss) == ["total", *labels]
    assert list(loss["amtml · fused KD"].y) == pytest.approx([term_loss("amtml/fused_kd", s) for s in STEPS])
    weights = by_name(charts.weight_figure(metrics, PATH_IDS))
    assert list(weights) == labels
    assert list(weights["amtml · fused KD"].y) == pytest.approx([term_weight("amtml/fused_kd", s) for s in STEPS])
    colors = {name: loss[name].line.color for name in labels}
    assert colors["task (CE)"] == TASK_LOSS_COLOR
    assert {colors[n] for n in labels[1:]} <= set(TERM_PALETTE) and len(set(colors.values())) == len(labels)
    assert all(weights[n].line.color == colors[n] for n in labels)  # the same colour on every chart
    # the same name gets the same colour in another run, whatever else the run has
    assert term_colors(["amtml/fused_kd", "x/y"])["amtml/fused_kd"] == term_colors(["amtml/fused_kd"])["amtml/fused_kd"]
    assert set(TERMS) == {"task", "amtml/fused_kd", "amtml/hint:p-hint", "uncertainty/reg"}


def test_term_labels_and_order() -> None:
    assert [term_label(n) for n in ("task", "path:p1", "amtml/fused_kd", "amtml/hint:p1", "uncertainty/reg")] == [
        "task (CE)", "p1", "amtml · fused KD", "amtml · hint (p1)", "uncertainty · regulariser"]
    names = {"uncertainty/reg", "path:b", "task", "amtml/fused_kd", "path:a", "path:zz"}
    assert ordered_terms(names, ["b", "a"]) == ["task", "path:b", "path:a", "path:zz", "amtml/fused_kd",
                                                "uncertainty/reg"]


def test_weighted_terms_stack_up_to_the_total() -> None:
    metrics = frame(term_metric_rows())
    series = {key: Series(g["step"].to_numpy(), g["epoch"].to_numpy(), g["value"].to_numpy(dtype=float))
              for key, g in metrics.sort_values("step").groupby("key")}
    fig = charts.weighted_loss_figure(long_frame("main", display_series(series)), PATH_IDS)
    traces = by_name(fig)
    above = [t.name for t in fig.data if t.stackgroup == "terms"]
    below = [t.name for t in fig.data if t.stackgroup == "below"]  # the negative regulariser, stacked from zero down
    assert below == ["uncertainty · regulariser"] and len(above) + len(below) == len(TERMS)
    assert all(min(traces[name].y) < 0 for name in below) and all(min(traces[name].y) >= 0 for name in above)
    assert np.sum([t.y for t in fig.data if t.stackgroup], axis=0) == pytest.approx(
        list(traces["total loss (logged)"].y))  # upper bands less the lower ones: the total
    assert traces["total loss (logged)"].line.dash == "dash"


def test_a_term_crossing_zero_is_split_at_zero_and_the_stacks_still_add_up() -> None:
    """An uncertainty regulariser starts above zero and ends below: drawn whole in either stack, its upper part
    would sit inside the task band (the chart's top 2.0 where the total is 2.4)."""
    task, reg = [2.0, 1.5, 1.0, 0.6], [0.4, 0.2, -0.1, -0.3]
    rows = [("main", s, 0, key, v) for s, (t, r) in enumerate(zip(task, reg))
            for key, v in (("weighted/task", t), ("weighted/uncertainty/reg", r), ("loss/total", t + r))]
    fig = charts.weighted_loss_figure(frame(rows), [])
    parts = [t for t in fig.data if t.legendgroup == "uncertainty/reg"]
    assert [(t.stackgroup, list(t.y), t.showlegend) for t in parts] == [
        ("terms", [0.4, 0.2, 0.0, 0.0], True), ("below", [0.0, 0.0, -0.1, -0.3], False)]  # one legend entry
    top = np.sum([t.y for t in fig.data if t.stackgroup == "terms"], axis=0)
    depth = np.sum([t.y for t in fig.data if t.stackgroup == "below"], axis=0)
    assert top + depth == pytest.approx([t + r for t, r in zip(task, reg)])


def test_weighted_terms_stay_on_common_steps_when_downsampled() -> None:
    n = 10_000
    steps = np.arange(n)
    spike = np.ones(n)
    spike[7_777] = 50.0
    series = {f"{kind}/{name}": Series(steps, steps // 1000, values) for name, loss in
              (("task", np.linspace(2, 1, n)), ("amtml/fused_kd", spike)) for kind, values in
              (("loss", loss), ("weight", np.full(n, 0.5)))}
    series["loss/total"] = Series(steps, steps // 1000, 0.5 * (np.linspace(2, 1, n) + spike))
    shown = display_series(series)
    task, fused = shown["weighted/task"], shown["weighted/amtml/fused_kd"]
    assert len(task.step) <= charts.MAX_POINTS and np.array_equal(task.step, fused.step)
    assert np.array_equal(shown["loss/total"].step, task.step)  # the dashed total lies on the stack's steps
    assert 7_777 in task.step and fused.value.max() == pytest.approx(25.0)  # the total's spike is kept
    smoothed = display_series(series, smoothing=100)
    assert np.array_equal(smoothed["weighted/task"].step, smoothed["weighted/amtml/fused_kd"].step)


def test_weights_spanning_decades_get_a_log_axis() -> None:
    def weights(values: dict[str, float]) -> pd.DataFrame:
        return pd.DataFrame([("main", 0, 0, f"weight/path:{pid}", w) for pid, w in values.items()],
                            columns=["phase", "step", "epoch", "key", "value"])

    wide = charts.weight_figure(weights({"kd": 1.0, "pkt": 30000.0}), ["kd", "pkt"])
    assert wide.layout.yaxis.type == "log"
    assert wide.layout.yaxis.title.text == "weight (multiplies the raw loss) (log scale)"
    assert charts.weight_figure(weights({"kd": 1.0, "at": 50.0}), ["kd", "at"]).layout.yaxis.type == "linear"
    # A zero weight (a path a weighting switched off) cannot be drawn on a log axis.
    assert charts.weight_figure(weights({"kd": 0.0, "pkt": 30000.0}), ["kd", "pkt"]).layout.yaxis.type == "linear"


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
    assert acc.layout.title.text == "Validation accuracy (acc/val)" and acc.layout.xaxis.title.text == "epoch"
    assert acc.layout.yaxis.title.text == "accuracy (%)"
    assert list(by_name(acc)["second"].y) == pytest.approx([60.0])


@pytest.mark.parametrize("key, title", [
    ("acc/val", "validation accuracy"), ("loss/total", "total loss"), ("loss/val", "validation loss"),
    ("loss/task", "task (CE) loss"), ("loss/path:p1", "p1 loss"), ("weight/amtml/fused_kd", "amtml · fused KD weight"),
    ("weighted/task", "task (CE): weight × loss"), ("time/aggregator", "weighting time per step"),
    ("system/rss_mb", "process memory (RSS)"), ("throughput/samples_per_s", "throughput (samples/s)"),
    ("lr", "learning rate"), ("agree/iou:t1", "agree/iou:t1"), ("acc/", "acc/")])
def test_metric_titles_say_the_key_in_words(key: str, title: str) -> None:
    assert charts.metric_title(key) == title


def test_overlay_legend_shows_a_run_name_as_text_not_as_markup() -> None:
    metrics = pd.DataFrame([("r1", "main", 5, 0, "loss/total", 1.0)], columns=["run_id", *queries.METRIC_COLUMNS])
    fig = charts.overlay_figure(metrics, "loss/total", {"r1": "<a href='https://evil.example'>r1</a>"})
    assert fig.data[0].name == "&lt;a href=&#x27;https://evil.example&#x27;&gt;r1&lt;/a&gt;"


def test_empty_metrics_give_empty_figures() -> None:
    empty = frame([])
    assert len(charts.loss_figure(empty, PATH_IDS).data) == 0
    assert len(charts.accuracy_figure(empty).data) == 0


def test_minmax_downsample_keeps_spikes() -> None:
    n = 10_001  # not a multiple of the bucket size: the last bucket is short
    values = np.sin(np.arange(n) / 50.0)
    values[4321] = 50.0
    values[777] = -50.0
    values[-1] = -60.0
    series = pd.DataFrame({"step": np.arange(n)[::-1], "value": values[::-1]})  # unsorted input
    steps, ys = charts.series_xy(series, "step")
    kept = charts.minmax_indices(ys, max_points=500)
    assert len(kept) <= 500
    assert np.all(np.diff(steps[kept]) > 0)  # in step order, no point twice
    assert ys[kept].max() == 50.0 and ys[kept].min() == -60.0
    # every bucket's extremes survive, not just the global ones
    size = -(-n // 250)
    for first in range(0, n, size):
        bucket = ys[first:first + size]
        assert bucket.max() in ys[kept] and bucket.min() in ys[kept]
    assert list(charts.minmax_indices(ys[:10], max_points=500)) == list(range(10))


def test_series_xy_drops_missing_values_and_sorts() -> None:
    series = pd.DataFrame({"step": [20, 0, 10], "value": [2.0, np.nan, 1.0]})
    steps, values = charts.series_xy(series, "step")
    assert list(steps) == [10, 20] and list(values) == [1.0, 2.0]


def sampled(every: int, end: int = 5_000) -> tuple[np.ndarray, np.ndarray]:
    steps = np.arange(0, end + 1, every)
    return steps, np.sin(steps / 300.0) + 0.0005 * steps


def test_fixed_grid_smoothing_does_not_change_with_the_sampling() -> None:
    dense_x, dense_y = charts.smooth_on_grid(*sampled(1), window=500)
    sparse_x, sparse_y = charts.smooth_on_grid(*sampled(10), window=500)
    assert np.array_equal(dense_x, sparse_x)
    assert np.allclose(dense_y, sparse_y, atol=1e-3)
    # a moving average over points instead of steps would lean on how densely the run logged
    by_points = pd.Series(sampled(10)[1]).rolling(50, center=True, min_periods=1).mean().to_numpy()
    assert not np.allclose(by_points[::10], pd.Series(sampled(1)[1]).rolling(50, center=True, min_periods=1)
                           .mean().to_numpy()[::100], atol=1e-3)


def test_a_window_longer_than_the_run_averages_what_there_is() -> None:
    steps = np.array([0, 10, 20, 30, 40])  # 40 steps, a 500-step window: 4 cells of 100 steps
    x, y = charts.smooth_on_grid(steps, np.array([1.0, 2.0, 3.0, 4.0, 5.0]), window=500)
    assert len(x) == len(y) == 1 and y[0] == pytest.approx(3.0)
    x, y = charts.smooth_on_grid(np.arange(0, 301, 10), np.arange(31, dtype=float), window=500)
    assert len(x) == len(y) == 3  # 3 cells of 100 steps, each averaged with every other one
    assert y == pytest.approx([np.mean(y)] * 3, abs=1e-9)


def test_cell_means_average_the_interpolated_series_over_each_cell() -> None:
    centres, means = charts.cell_means(np.array([0, 10, 20]), np.array([0.0, 10.0, 0.0]), width=10)
    assert list(centres) == [5.0, 15.0] and list(means) == pytest.approx([5.0, 5.0])
    # a ramp's cell means are its values at the cell centres, wherever its samples fall
    steps = np.array([3, 7, 18, 26])
    centres, means = charts.cell_means(steps, 2.0 * steps, width=10)
    assert list(centres) == [6.5, 15.0, 23.0] and list(means) == pytest.approx([13.0, 30.0, 46.0])


def test_grid_width_is_round_and_bounds_the_cells() -> None:
    assert charts.grid_width(50_000, 200) == 500
    assert charts.grid_width(3_000, 200) == 20
    assert charts.grid_width(10, 200) == 1
    for span in (7, 130, 9_999, 123_456):
        assert span / charts.grid_width(span, 200) <= 200


def time_rows(steps: list[int], ms: dict[str, float]) -> list[tuple]:
    return [("main", step, 0, f"time/{section}", value) for step in steps for section, value in ms.items()]


def test_step_time_shares_sum_to_100_in_step_order() -> None:
    rows = time_rows([0, 10], {"aggregator": 2.0, "data": 1.0, "student": 6.0, "teachers": 1.0})
    rows += time_rows([20], {"aggregator": 0.0, "data": 0.0, "student": 0.0, "teachers": 0.0})  # nothing measured
    shares = charts.step_time_shares(frame(rows + [("main", 0, 0, "loss/total", 1.0)]))
    assert list(shares.columns) == ["data", "teachers", "student", "aggregator"]  # the order a step runs them
    assert list(shares.index) == [0, 10]
    assert np.allclose(shares.sum(axis=1), 100.0)
    assert shares.loc[0, "student"] == pytest.approx(60.0)
    fig = charts.step_time_figure(shares)
    # the legend calls the "aggregator" section (the key stored runs keep) what it is now: the weighting's work
    assert [t.name for t in fig.data] == ["data", "teachers", "student", "weighting"]
    assert {t.stackgroup for t in fig.data} == {"time"}
    assert fig.data[2].line.color == section_color("student")


def test_live_figures_add_weights_and_timing_only_when_logged(main_metrics: pd.DataFrame) -> None:
    assert set(charts.live_figures(main_metrics[~main_metrics["key"].str.startswith("weight/")], PATH_IDS)) == {
        "loss", "accuracy"}
    timed = pd.concat([main_metrics, frame(time_rows([0, 5], {"student": 3.0, "paths": 1.0}))])
    assert set(charts.live_figures(timed, PATH_IDS)) == {"loss", "accuracy", "weights", "weighted", "step_time"}


def system_rows(keys: tuple[str, ...]) -> list[tuple]:
    return [("main", step, 0, key, 10.0 + step) for step in (0, 5, 10) for key in keys]


def test_live_figures_are_plain_dicts_plotly_accepts_and_draws_as_they_are(main_metrics: pd.DataFrame) -> None:
    timed = pd.concat([main_metrics, frame(time_rows([0, 5], {"student": 3.0})),
                       frame(system_rows((charts.SYS_CPU_PERCENT, charts.SYS_RSS_MB, charts.SYS_GPU_MEM_MB)))])
    figures = charts.live_figures(timed, PATH_IDS)
    assert set(figures) == {"loss", "accuracy", "weights", "weighted", "step_time", "system_use", "system_memory"}
    for name, spec in figures.items():
        assert isinstance(spec, dict), name
        validated = go.Figure(spec)  # raises on any property plotly does not know
        drawn = charts.unvalidated(spec).to_dict()
        assert drawn["layout"]["title"] == validated.to_dict()["layout"]["title"] == spec["layout"]["title"], name
        assert [t["name"] for t in drawn["data"]] == [t.name for t in validated.data], name
    memory = go.Figure(figures["system_memory"])
    assert [t.name for t in memory.data] == ["process memory (RSS)", "GPU memory in use"]
    assert memory.layout.yaxis.title.text == "memory (MiB)" and list(memory.data[0].y) == [10.0, 15.0, 20.0]
    assert [t.name for t in go.Figure(figures["system_use"]).data] == ["process CPU"]  # only what was logged


def test_a_single_system_sample_is_drawn_as_a_point() -> None:
    """A 2-second run samples the system once; a line through one point would leave the chart empty."""
    one = frame([("main", 0, 0, charts.SYS_CPU_PERCENT, 150.0)])
    (trace,) = charts.system_specs(one)["system_use"]["data"]
    assert trace["mode"] == "lines+markers" and list(trace["y"]) == [150.0]
    (trace,) = charts.system_specs(frame(system_rows((charts.SYS_CPU_PERCENT,))))["system_use"]["data"]
    assert trace["mode"] == "lines"


def test_unvalidated_skips_plotly_validation() -> None:
    """What keeps a Live poll fast: the figure handed to st.plotly_chart is not checked property by property."""
    spec = {"data": [{"type": "scatter", "x": [1, 2], "y": [3, 4], "madeupname": 1}], "layout": {}}
    with pytest.raises(ValueError):
        go.Figure(spec)
    assert charts.unvalidated(spec).to_dict()["data"][0]["madeupname"] == 1


def test_overlay_smoothing_draws_the_fixed_grid_average() -> None:
    steps, values = sampled(10)
    metrics = pd.DataFrame({"run_id": "r1", "phase": "main", "step": steps, "epoch": 0, "key": "loss/total",
                            "value": values})
    (trace,) = charts.overlay_figure(metrics, "loss/total", {"r1": "run"}, smoothing=500).data
    x, y = charts.smooth_on_grid(steps, values, 500)
    assert list(trace.x) == list(x) and list(trace.y) == pytest.approx(list(y))


def test_axis_titles_name_units() -> None:
    assert charts.axis_title("acc/test") == "accuracy (%)"
    assert charts.axis_title("weight/path:a") == "term weight"
    assert charts.axis_title("lr") == "learning rate"
    assert charts.axis_title("loss/val") == "loss"


# ---------------------------------------------------------------- queries on a real store
def test_runs_frame_summarises_specs_and_results(tmp_path) -> None:
    first = add_finished_run(tmp_path, "first", weighting="equal")
    second = add_finished_run(tmp_path, "second", weighting="fixed", method="amtml")
    old = add_finished_run(tmp_path, "old", stored_spec=legacy_spec_yaml("old", "uncertainty"))
    with closing(Store(tmp_path, readonly=True)) as store:
        runs = queries.runs_frame(store)
    assert list(runs["id"]) == [old, second, first]  # newest first
    assert list(runs["combination"]) == ["uncertainty", "amtml · fixed", "equal"]  # version 1 migrated
    row = runs.set_index("id").loc[first]
    assert row["status"] == "done"
    assert row["student"] == "mlp" and row["combination"] == "equal" and row["n_paths"] == 2
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
    assert queries.phases(metrics["phase"]) == ["main", "teacher:t"]
    assert list(long.columns) == ["run_id", *queries.METRIC_COLUMNS]
    assert set(long["run_id"]) == {run_id}
    assert list(events["message"]) == ["run finished"]


def test_spec_summary_tolerates_broken_specs() -> None:
    assert queries.spec_summary("::: not yaml [")["student"] == "?"
    assert queries.spec_summary("- a list")["n_paths"] == 0
