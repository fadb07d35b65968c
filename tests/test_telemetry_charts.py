"""Telemetry queries and chart builders (Teacher importance), the comparison helpers and sample pictures."""
from __future__ import annotations

import math
import statistics
from contextlib import closing

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from app import charts, queries
from app import telemetry_charts as tc
from app.colors import PALETTE, TEACHER_PALETTE, class_color, depth_colors, path_color, teacher_color
from app.run_series import Series, display_series, long_frame
from app.samples import MIN_SIDE_PX, SampleImages
from app.spec_form import NAME_MAX, comparison_variants, parse_seeds, variant_name
from engine.data.bundle import DataBundle, Split
from engine.store import Store
from engine.telemetry import Recorded
from synthetic_runs import PATH_IDS, add_finished_run, metric_rows, path_loss, path_weight

TEACHERS = ["t1", "t2", "t3"]


def weights_frame(rows: list[tuple[int, int, int, list[float]]], columns: list[str] = TEACHERS) -> pd.DataFrame:
    """rows: (step, sample, label, weights) -> a labelled array frame as the queries return it."""
    index = pd.MultiIndex.from_tuples([(step, 0, sample, label) for step, sample, label, _ in rows],
                                      names=[*queries.ARRAY_LEVELS, "label"])
    return pd.DataFrame([w for *_, w in rows], index=index, columns=columns)


@pytest.fixture
def weights() -> pd.DataFrame:
    return weights_frame([
        (0, 10, 1, [0.6, 0.3, 0.1]), (0, 11, 0, [0.2, 0.2, 0.6]), (0, 12, 1, [0.4, 0.4, 0.2]),
        (5, 10, 1, [0.8, 0.1, 0.1]), (5, 13, 0, [0.1, 0.1, 0.8]),
    ])


# ---------------------------------------------------------------- queries on a real store
def test_array_frame_stacks_steps_and_joins_labels_by_sample(tmp_path) -> None:
    run_id = add_finished_run(tmp_path, arrays=[
        ("main", 0, 0, "amtml/teacher_weights", Recorded(np.array([[0.7, 0.3], [0.4, 0.6]], np.float32),
                                                          np.array([5, 9]), ["a", "b"])),
        # labels in another order than the weights: the join goes by sample id, not by position
        ("main", 0, 0, "labels", Recorded(np.array([3.0, 7.0], np.float32), np.array([9, 5]), None)),
        ("main", 10, 0, "amtml/teacher_weights", Recorded(np.array([[0.5, 0.5]], np.float32), np.array([2]), ["a", "b"])),
        ("main", 10, 0, "amtml/theta_norm", Recorded(np.array([[1.5, 2.5]], np.float32), np.array([-1]), ["a", "b"])),
    ])
    with closing(Store(tmp_path, readonly=True)) as store:
        keys = queries.array_keys(store, run_id)
        frame = queries.labelled_array_frame(store, run_id, "amtml/teacher_weights")
        norms = queries.array_frame(store, run_id, "amtml/theta_norm")
        missing = queries.array_frame(store, run_id, "sakd/decisions")
    assert keys == ["amtml/teacher_weights", "amtml/theta_norm", "labels"]
    assert list(frame.index.names) == ["step", "epoch", "sample", "label"]
    assert list(frame.columns) == ["a", "b"]
    assert frame.index.tolist() == [(0, 0, 5, 7), (0, 0, 9, 3), (10, 0, 2, -1)]  # -1: no label recorded
    assert frame["a"].tolist() == pytest.approx([0.7, 0.4, 0.5])
    assert norms.index.tolist() == [(10, 0, -1)] and norms["b"].tolist() == [2.5]
    assert missing.empty and list(missing.index.names) == queries.ARRAY_LEVELS


def test_combination_summary_mean_std_and_pending() -> None:
    runs = pd.DataFrame({
        "combination": ["equal", "equal", "equal", "fixed", "fixed", "dwa"],
        "status": ["done", "done", "running", "done", "failed", "queued"],
        "test_acc_pct": [90.0, 80.0, None, 70.0, None, None],
    })
    summary = queries.combination_summary(runs).set_index("combination")
    assert list(summary.index) == ["dwa", "equal", "fixed"]
    assert summary.loc["equal", "finished"] == 2 and summary.loc["equal", "pending"] == 1
    assert summary.loc["equal", "mean"] == pytest.approx(85.0)
    assert summary.loc["equal", "std"] == pytest.approx(statistics.stdev([90.0, 80.0]))
    assert summary.loc["fixed", "finished"] == 1 and math.isnan(summary.loc["fixed", "std"])
    assert summary.loc["dwa", "finished"] == 0 and summary.loc["dwa", "pending"] == 1


def test_combination_accuracy_figure_points_and_error_bars() -> None:
    runs = pd.DataFrame({"combination": ["equal", "equal", "amtml · fixed"], "status": ["done"] * 3,
                         "test_acc_pct": [90.0, 80.0, 70.0], "name": ["e0", "e1", "f0"]})
    fig = charts.combination_accuracy_figure(runs, queries.combination_summary(runs))
    points = {t.name: t for t in fig.data}
    assert list(points["equal"].y) == [90.0, 80.0] and points["equal"].marker.color == PALETTE[1]
    mean = points["mean ± std"]
    assert list(mean.text) == ["amtml · fixed", "equal"] and list(mean.y) == pytest.approx([70.0, 85.0])
    assert list(fig.layout.xaxis.ticktext) == ["amtml · fixed", "equal"]
    assert list(points["equal"].x) == pytest.approx([1 - charts.GROUP_OFFSET] * 2)  # left of the mean
    assert list(mean.error_y.array) == pytest.approx([0.0, statistics.stdev([90.0, 80.0])])
    assert fig.layout.yaxis.title.text == "test accuracy (%)"


# ---------------------------------------------------------------- Live: weighted losses
def test_weighted_losses_align_weight_and_loss_on_the_step() -> None:
    metrics = pd.DataFrame(metric_rows(), columns=queries.METRIC_COLUMNS)
    main = metrics[metrics["phase"] == "main"]
    # a loss logged at a step without a weight has no weighted value
    main = pd.concat([main, pd.DataFrame([("main", 999, 1, "loss/path:p-hint", 5.0)], columns=queries.METRIC_COLUMNS)])
    series = {key: Series(g["step"].to_numpy(), g["epoch"].to_numpy(), g["value"].to_numpy(dtype=float))
              for key, g in main.sort_values("step").groupby("key")}
    fig = charts.weighted_loss_figure(long_frame("main", display_series(series)), PATH_IDS)
    traces = {t.name: t for t in fig.data}
    assert list(traces) == [*PATH_IDS, "total loss (logged)"]
    steps = list(traces["p-hint"].x)
    assert 999 not in steps
    assert list(traces["p-hint"].y) == pytest.approx([path_weight(1, s) * path_loss(1, s) for s in steps])
    assert traces["p-hint"].line.color == path_color("p-hint", PATH_IDS)
    assert fig.layout.yaxis.title.text == "weight × loss (adds up to the total loss)"


# ---------------------------------------------------------------- AMTML
def test_simplex_has_one_trace_per_class_with_teacher_coloured_axes(weights: pd.DataFrame) -> None:
    at_step = tc.rows_at_step(weights, 0)
    fig = tc.teacher_simplex_figure(at_step, list(reversed(TEACHERS)), 0)
    assert [t.name for t in fig.data] == ["class 0", "class 1"]
    class1 = fig.data[1]
    assert isinstance(class1, go.Scatterternary)
    assert list(class1.customdata) == [10, 12]
    assert list(class1.a) == [0.6, 0.4] and list(class1.b) == [0.3, 0.4] and list(class1.c) == [0.1, 0.2]
    assert class1.marker.color == class_color(1)
    ternary = fig.layout.ternary
    assert ternary.sum == 1
    # colour follows the teacher's position in the spec, here reversed
    assert ternary.aaxis.title.font.color == TEACHER_PALETTE[2] and ternary.caxis.title.font.color == TEACHER_PALETTE[0]


def test_bars_are_stacked_per_sample_sorted_by_class(weights: pd.DataFrame) -> None:
    at_step = tc.rows_at_step(weights, 0)[["t1", "t2"]]
    fig = tc.teacher_bars_figure(at_step, TEACHERS, 0)
    assert fig.layout.barmode == "stack"
    assert [t.name for t in fig.data] == ["t1", "t2"]
    assert list(fig.data[0].y) == ["class 0 · #11", "class 1 · #10", "class 1 · #12"]
    assert list(fig.data[0].x) == [0.2, 0.6, 0.4]
    assert fig.data[1].marker.color == teacher_color("t2", TEACHERS)
    assert fig.layout.xaxis.title.text == tc.WEIGHT_AXIS


def test_class_mean_weights_per_step(weights: pd.DataFrame) -> None:
    means = tc.class_mean_weights(weights, 1)
    assert list(means.index) == [0, 5]
    assert means.loc[0].tolist() == pytest.approx([0.5, 0.35, 0.15])
    assert means.loc[5].tolist() == pytest.approx([0.8, 0.1, 0.1])
    everyone = tc.class_mean_weights(weights, None)
    assert everyone.loc[0, "t3"] == pytest.approx((0.1 + 0.6 + 0.2) / 3)
    fig = tc.class_weight_figure(means, TEACHERS, 1)
    assert [t.name for t in fig.data] == TEACHERS and fig.layout.title.text.endswith("class 1")
    assert list(fig.data[0].y) == pytest.approx([0.5, 0.8])


def test_gallery_order_and_trust_extremes(weights: pd.DataFrame) -> None:
    at_step = tc.rows_at_step(weights, 0)
    decisive, even, batch = tc.GALLERY_ORDERS
    samples = lambda frame: frame.index.get_level_values("sample").tolist()  # noqa: E731
    assert samples(tc.gallery_samples(at_step, decisive, 2)) == [10, 11]  # top weights 0.6, 0.6 before 0.4
    assert samples(tc.gallery_samples(at_step, even, 1)) == [12]
    assert samples(tc.gallery_samples(at_step, batch, 3)) == [10, 11, 12]
    row = at_step.iloc[0]
    assert tc.trust_extremes(row) == ("t1", "t3")
    fig = tc.sample_weight_figure(row, TEACHERS)
    assert list(fig.data[0].marker.color) == list(TEACHER_PALETTE[:3])
    assert "t1 0.60" in fig.layout.title.text and "t3 0.10" in fig.layout.title.text


def test_theta_norm_lines_per_teacher() -> None:
    index = pd.MultiIndex.from_tuples([(0, 0, -1), (10, 0, -1)], names=queries.ARRAY_LEVELS)
    norms = pd.DataFrame([[1.0, 2.0], [1.5, 2.5]], index=index, columns=["t1", "t2"])
    fig = tc.theta_norm_figure(norms, TEACHERS)
    assert [t.name for t in fig.data] == ["t1", "t2"]
    assert list(fig.data[1].x) == [0, 10] and list(fig.data[1].y) == [2.0, 2.5]
    assert fig.data[1].line.color == TEACHER_PALETTE[1]
    assert fig.layout.yaxis.title.text == "‖θ‖ (L2 norm)"


# ---------------------------------------------------------------- SAKD
@pytest.fixture
def decisions() -> pd.DataFrame:
    return weights_frame([
        (0, 1, 2, [1, 0, 1]), (0, 2, 0, [1, 1, 0]), (0, 3, 2, [0, 0, 1]),
        (7, 1, 2, [0, 0, 0]), (7, 4, 0, [1, 0, 1]),
    ], columns=["layer1", "layer2", "fc"])


def test_spot_fractions_and_chart(decisions: pd.DataFrame) -> None:
    fractions = tc.spot_fractions(decisions)
    assert fractions.loc[0].tolist() == pytest.approx([2 / 3, 1 / 3, 2 / 3])
    assert fractions.loc[7].tolist() == pytest.approx([0.5, 0.0, 0.5])
    fig = tc.spot_fraction_figure(fractions)
    assert [t.name for t in fig.data] == ["layer1", "layer2", "fc"]
    assert [t.line.color for t in fig.data] == depth_colors(3)
    assert fig.layout.yaxis.title.text == "fraction of the batch distilled"


def test_decision_map_sorted_by_class(decisions: pd.DataFrame) -> None:
    fig = tc.decision_map_figure(tc.rows_at_step(decisions, 0), 0)
    (heatmap,) = fig.data
    assert list(heatmap.y) == ["class 0 · #2", "class 2 · #1", "class 2 · #3"]
    assert np.array(heatmap.z).tolist() == [[1, 1, 0], [1, 0, 1], [0, 0, 1]]
    assert list(heatmap.x) == ["layer1", "layer2", "fc"]


def test_spot_use_by_class(decisions: pd.DataFrame) -> None:
    use = tc.spot_use_by_class(decisions)
    assert use.loc[0].tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert use.loc[2].tolist() == pytest.approx([1 / 3, 0.0, 2 / 3])
    (heatmap,) = tc.spot_use_figure(use).data
    assert list(heatmap.y) == ["class 0", "class 2"] and heatmap.zmax == 1


def test_agent_loss_lines() -> None:
    index = pd.MultiIndex.from_tuples([(0, 0, -1), (50, 0, -1)], names=queries.ARRAY_LEVELS)
    losses = pd.DataFrame([[1.2, 1.5], [0.8, 1.0]], index=index, columns=["l_route", "l_student"])
    fig = tc.agent_loss_figure(losses)
    assert [t.name for t in fig.data] == ["l_route (routed network)", "l_student (student alone)"]
    assert list(fig.data[1].y) == [1.5, 1.0]


# ---------------------------------------------------------------- DFA
def test_alpha_heatmap_rows_are_blocks_columns_search_steps() -> None:
    index = pd.MultiIndex.from_tuples([(0, 0, -1), (4, 1, -1)], names=queries.ARRAY_LEVELS)
    alphas = pd.DataFrame([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]], index=index, columns=["b1", "b2", "b3"])
    fig = tc.alpha_heatmap_figure(alphas, "layer2")
    (heatmap,) = fig.data
    assert list(heatmap.x) == [0, 4] and list(heatmap.y) == ["b1", "b2", "b3"]
    assert np.array(heatmap.z) == pytest.approx(np.array([[0.5, 0.1], [0.3, 0.2], [0.2, 0.7]]))
    assert fig.layout.xaxis.title.text == "search step" and "layer2" in fig.layout.title.text


def test_search_curves_put_l_st_on_its_own_axis() -> None:
    rows = [("search", s, e, key, v) for e, s in enumerate([0, 4])
            for key, v in (("dfa/loss_ts", 2.0 - e), ("dfa/loss_st", 0.5), ("dfa/entropy:g1", 1.0 - 0.1 * e))]
    search = pd.DataFrame(rows, columns=queries.METRIC_COLUMNS)
    bridge = tc.bridge_loss_figure(search, "dfa/loss_ts", "dfa/loss_st")
    ts, st_ = bridge.data
    assert list(ts.y) == [2.0, 1.0] and ts.yaxis == "y" and st_.yaxis == "y2"
    assert bridge.layout.yaxis2.title.text == "L_ST (mean squared error)"
    assert bridge.layout.legend.orientation == "h" and bridge.layout.legend.y < 0  # clear of the right axis
    entropy = tc.alpha_entropy_figure(search, ["g1", "g2"], "dfa/entropy:")
    assert [t.name for t in entropy.data] == ["g1"]  # a group without entropy values draws nothing
    assert list(entropy.data[0].y) == pytest.approx([1.0, 0.9])


# ---------------------------------------------------------------- colours
def test_teacher_colours_are_stable_and_not_path_colours() -> None:
    assert teacher_color("t2", TEACHERS) == TEACHER_PALETTE[1]
    assert teacher_color("unknown", TEACHERS) == TEACHER_PALETTE[3]
    assert not set(TEACHER_PALETTE) & set(PALETTE)
    assert len(set(depth_colors(4))) == 4


# ---------------------------------------------------------------- sample pictures
def test_sample_images_undo_the_normalisation_and_look_up_ids_across_splits() -> None:
    mean, std = (0.5,), (0.25,)
    raw = torch.tensor([0.0, 0.25, 1.0]).view(3, 1, 1, 1).expand(3, 1, 4, 4)

    def split(rows: list[int], ids: list[int]) -> Split:
        return Split((raw[rows] - mean[0]) / std[0], torch.zeros(len(rows), dtype=torch.long), torch.tensor(ids))

    bundle = DataBundle("toy", 2, 1, 4, ["a", "b"], mean, std, train=split([0], [7]), val=split([1], [3]),
                        test=split([2], [11]))
    images = SampleImages.from_bundle(bundle)
    picture = images.image(3)
    assert picture.shape == (MIN_SIDE_PX, MIN_SIDE_PX)  # grey images come back 2-D, enlarged with square pixels
    assert picture.max() == pytest.approx(0.25, abs=1 / 255)
    assert images.image(11).min() == pytest.approx(1.0)
    assert images.image(7).max() == 0.0
    assert images.image(5) is None


# ---------------------------------------------------------------- comparison helpers
def test_parse_seeds() -> None:
    assert parse_seeds("0,1, 2 2") == [0, 1, 2]
    assert parse_seeds(" 7 ") == [7]
    with pytest.raises(ValueError, match="'x' is not a whole number"):
        parse_seeds("1,x")
    with pytest.raises(ValueError, match="no seed"):
        parse_seeds(" , ")


def test_comparison_variants_change_only_weighting_seed_and_name() -> None:
    spec = {"name": "base", "seed": 0, "epochs": 3, "weighting": {"name": "fixed", "params": {"task_weight": 0.5}}}
    variants = comparison_variants(spec, ["equal", "fixed"], [1, 2])
    assert [(v["weighting"]["name"], v["seed"], v["name"]) for v in variants] == [
        ("equal", 1, "base · equal · seed 1"), ("equal", 2, "base · equal · seed 2"),
        ("fixed", 1, "base · fixed · seed 1"), ("fixed", 2, "base · fixed · seed 2")]
    assert variants[0]["weighting"]["params"] == {} and variants[2]["weighting"]["params"] == {"task_weight": 0.5}
    assert all(v["epochs"] == 3 for v in variants)
    variants[2]["weighting"]["params"]["task_weight"] = 9  # variants are copies
    assert spec["weighting"]["params"] == {"task_weight": 0.5}
    long = variant_name("x" * 200, "adaptive_distillation", 12)
    assert len(long) == NAME_MAX and long.endswith(" · adaptive_distillation · seed 12")
