"""Sweep analysis (app/sweep_analysis.py) and its figures (app/sweep_charts.py) on constructed runs."""
from __future__ import annotations

import copy
import itertools
import json
import math

import pandas as pd
import plotly.graph_objects as go
import pytest

from app.colors import path_color
from app.sweep_analysis import (
    BEST, FINAL, UNSET, epoch_bands, parameter_importance, path_final_weights, run_final_weights, seed_summary,
    short_configs, sweep_frame, varied_fields,
)
from app.sweep_charts import band_figure, importance_figure, parcoords_figure, path_weights_figure
from engine.comparison import parse_grid, sweep_variants
from engine.spec import parse_spec, spec_to_dict
from tests.conftest import tiny_spec_dict

LRS = [0.01, 0.03, 0.1, 0.3]
WEIGHTINGS = ["equal", "dwa", "uncertainty"]
TEMPERATURES = [2.0, 4.0]
LR, WEIGHTING, TEMPERATURE = "optimizer.lr", "weighting.name", "paths[t-kd].params.temperature"


def spec(lr: float = 0.05, weighting: str = "equal", temperature: float | None = None, seed: int = 0,
         name: str = "tiny") -> dict:
    data = tiny_spec_dict(name=name, seed=seed, optimizer={"lr": lr}, weighting={"name": weighting})
    if temperature is not None:
        data["paths"][0]["params"] = {"temperature": temperature}
    return data


def factorial(accuracy) -> tuple[pd.DataFrame, list[str]]:
    """24 runs, every (lr, weighting, temperature); final accuracy = accuracy(lr, weighting, temperature)."""
    specs, final = {}, {}
    for i, (lr, weighting, temperature) in enumerate(itertools.product(LRS, WEIGHTINGS, TEMPERATURES)):
        specs[f"r{i}"] = spec(lr, weighting, temperature, name=f"run {i}")
        final[f"r{i}"] = accuracy(lr, weighting, temperature)
    sweep = varied_fields(specs)
    return sweep_frame(sweep, final, final), sweep.fields


# ---------------------------------------------------------------- varied fields
def test_varied_fields_are_the_sweep_grid_with_seeds_apart() -> None:
    base = spec_to_dict(parse_spec(tiny_spec_dict()))
    grid = parse_grid(["optimizer.lr=0.01,0.1", "aggregator=equal,dwa", "paths.0.weight=0.5,2"], base)
    variants = sweep_variants(base, grid, seeds=[0, 1])
    sweep = varied_fields({f"r{i}": v for i, v in enumerate(variants)})
    # the names are readable: a path by its id, not its position; the run name and seed are no parameters
    assert sweep.fields == ["paths[t-kd].weight", WEIGHTING, LR]
    assert sweep.numeric == {"paths[t-kd].weight", LR}
    assert list(sweep.seeds) == [0, 1] * 8
    assert sweep.configs.nunique() == 8  # runs identical but for the seed share a configuration
    assert sweep.configs["r0"] == sweep.configs["r1"] == (
        "paths[t-kd].weight=0.5 · weighting.name=equal · optimizer.lr=0.01")
    assert sweep.path_ids == ["t-kd"]


def test_defaults_written_out_or_left_out_are_one_value_and_old_specs_migrate() -> None:
    implicit = tiny_spec_dict()
    explicit = tiny_spec_dict(optimizer={"name": "sgd", "lr": 0.05}, weighting={"name": "equal", "params": {}})
    version_1 = {**tiny_spec_dict(version=1), "aggregator": {"name": "dwa"}}
    sweep = varied_fields({"a": implicit, "b": explicit, "c": version_1})
    assert sweep.fields == [WEIGHTING]
    assert list(sweep.values[WEIGHTING]) == ["equal", "equal", "dwa"]


def test_a_field_only_some_runs_have_is_unset_in_the_others() -> None:
    two_paths = tiny_spec_dict()
    two_paths["paths"].append({"id": "extra", "teacher": "t", "distiller": "at", "teacher_spot": "fc",
                               "student_spot": "fc", "weight": 3})
    teacher = copy.deepcopy(two_paths)
    teacher["teachers"][0]["arch"] = "small_cnn"
    sweep = varied_fields({"one": tiny_spec_dict(), "two": two_paths, "cnn": teacher})
    assert "teachers[t].arch" in sweep.fields
    assert list(sweep.values["paths[extra].distiller"]) == [UNSET, "at", "at"]
    assert "paths[extra].weight" not in sweep.numeric  # a number or UNSET: drawn and ranked as categories
    assert sweep.path_ids == ["t-kd", "extra"]


# ---------------------------------------------------------------- parameter importance
@pytest.mark.parametrize("field, accuracy", [
    (LR, lambda lr, weighting, temperature: 0.5 + 0.1 * math.log10(lr / 0.01)),
    (WEIGHTING, lambda lr, weighting, temperature: {"equal": 0.7, "dwa": 0.9, "uncertainty": 0.6}[weighting]),
])
def test_importance_ranks_the_one_field_accuracy_depends_on_first(field: str, accuracy) -> None:
    frame, fields = factorial(accuracy)
    table = parameter_importance(frame, fields, FINAL)
    assert set(table["field"]) == {LR, WEIGHTING, TEMPERATURE}
    assert table["field"].iloc[0] == field  # by random-forest importance
    assert table.sort_values("abs_spearman", ascending=False)["field"].iloc[0] == field
    top = table.set_index("field").loc[field]
    assert top["abs_spearman"] > 0.8 and top["rf_importance"] > 0.8
    others = table[table["field"] != field]
    assert (others["abs_spearman"] < 0.2).all() and (others["rf_importance"] < 0.1).all()


def test_a_field_with_a_new_value_in_every_run_does_not_outrank_the_one_that_matters() -> None:
    """A per-run value (each run's own checkpoint path) would rank first, with a perfect correlation, if a run's
    own accuracy encoded its own category: it is left out."""
    frame, fields = factorial(lambda lr, weighting, temperature: 0.5 + 0.1 * math.log10(lr / 0.01))
    frame["teachers[t].source.path"] = [f"/ckpt/run-{i}.pt" for i in range(len(frame))]
    table = parameter_importance(frame, [*fields, "teachers[t].source.path"], FINAL).set_index("field")
    assert table.index[0] == LR
    assert "teachers[t].source.path" not in table.index


def test_configurations_of_many_fields_are_numbered_on_the_charts() -> None:
    few = pd.Series(["a=1 · b=2", "a=2 · b=2"], index=["r1", "r2"])
    assert short_configs(few).equals(few)
    many = pd.Series(["a=1 · b=2 · c=3 · d=4", "a=2 · b=2 · c=3 · d=4", "a=1 · b=2 · c=3 · d=4"],
                     index=["r1", "r2", "r3"])
    assert list(short_configs(many)) == ["config 1", "config 2", "config 1"]  # seeds of one setup share it


def test_importance_sign_follows_a_numeric_field() -> None:
    frame, fields = factorial(lambda lr, weighting, temperature: 0.9 - 0.1 * LRS.index(lr))
    assert parameter_importance(frame, fields, FINAL).set_index("field").loc[LR, "spearman"] == pytest.approx(-1.0)


def test_importance_needs_four_runs_with_the_target() -> None:
    frame, fields = factorial(lambda lr, weighting, temperature: 0.5 + lr)
    frame[BEST] = float("nan")
    frame.loc[frame.index[:3], BEST] = [0.5, 0.6, 0.7]  # the others have no best accuracy yet
    with pytest.raises(ValueError, match="at least 4 runs with a best accuracy; the selection has 3"):
        parameter_importance(frame, fields, BEST)


def test_importance_with_nothing_varying_says_so() -> None:
    sweep = varied_fields({f"s{seed}": spec(seed=seed) for seed in range(5)})
    frame = sweep_frame(sweep, {f"s{s}": 0.8 + 0.01 * s for s in range(5)}, {})
    with pytest.raises(ValueError, match="no spec field varies across the 5 runs with a final accuracy"):
        parameter_importance(frame, sweep.fields, FINAL)


def test_importance_of_runs_with_one_accuracy_says_so() -> None:
    frame, fields = factorial(lambda lr, weighting, temperature: 0.9)
    with pytest.raises(ValueError, match="every one of the 24 runs has 90.00%"):
        parameter_importance(frame, fields, FINAL)


# ---------------------------------------------------------------- seeds
def seeded_frame() -> pd.DataFrame:
    specs = {"a0": spec(0.1, seed=0), "a1": spec(0.1, seed=1), "a2": spec(0.1, seed=2), "b0": spec(0.3, seed=0),
             "pending": spec(0.3, seed=1)}
    final = {"a0": 0.80, "a1": 0.84, "a2": 0.86, "b0": 0.70}
    best = {"a0": 0.82, "a1": 0.85, "a2": 0.89, "b0": 0.75}
    return sweep_frame(varied_fields(specs), final, best)


def test_seed_summary_matches_hand_computed_means_and_stds() -> None:
    summary = seed_summary(seeded_frame()).set_index("config")
    a, b = summary.loc["optimizer.lr=0.1"], summary.loc["optimizer.lr=0.3"]
    # finals 80, 84, 86: mean 83.333, sample variance (3.333^2 + 0.667^2 + 2.667^2) / 2 = 9.333
    assert (a["n"], a["final_mean_pct"], a["final_std_pct"]) == (3, pytest.approx(83.3333, abs=1e-3),
                                                                 pytest.approx(3.05505, abs=1e-4))
    # bests 82, 85, 89: mean 85.333, sample variance (3.333^2 + 0.333^2 + 3.667^2) / 2 = 12.333
    assert (a["best_mean_pct"], a["best_std_pct"]) == (pytest.approx(85.3333, abs=1e-3),
                                                       pytest.approx(3.51188, abs=1e-4))
    assert a["seeds"] == "0, 1, 2"
    assert b["n"] == 1 and b["final_mean_pct"] == pytest.approx(70.0) and math.isnan(b["final_std_pct"])
    assert list(summary.index) == ["optimizer.lr=0.1", "optimizer.lr=0.3"]  # best mean first; pending run left out


def acc_rows(run_id: str, values: list[float], phase: str = "main", key: str = "acc/test") -> list[tuple]:
    return [(run_id, phase, 10 * (epoch + 1), epoch, key, value) for epoch, value in enumerate(values)]


def metrics(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["run_id", "phase", "step", "epoch", "key", "value"])


def test_epoch_bands_average_the_runs_of_each_configuration() -> None:
    configs = pd.Series({"a0": "A", "a1": "A", "b0": "B"})
    frame = metrics(acc_rows("a0", [0.5, 0.7]) + acc_rows("a1", [0.6, 0.9]) + acc_rows("b0", [0.4, 0.45])
                    + acc_rows("a0", [0.1, 0.1], phase="teacher:t") + acc_rows("other", [0.0, 0.0])
                    + acc_rows("a0", [9.0, 9.0], key="acc/val"))
    bands = epoch_bands(frame, configs, "acc/test").set_index(["config", "epoch"])
    assert bands.loc[("A", 0), "mean"] == pytest.approx(0.55) and bands.loc[("A", 1), "mean"] == pytest.approx(0.8)
    assert bands.loc[("A", 1), "std"] == pytest.approx(math.sqrt(0.02))  # (0.7, 0.9): sample std 0.1414
    assert bands.loc[("B", 1), "n"] == 1 and math.isnan(bands.loc[("B", 1), "std"])

    fig = band_figure(bands.reset_index(), "acc/test")
    assert fig["layout"]["xaxis"]["title"]["text"] == "epoch"
    assert "%" in fig["layout"]["yaxis"]["title"]["text"]
    means = {t["name"]: t["y"] for t in fig["data"] if t.get("fill") is None}
    assert means == {"A": [pytest.approx(55.0), pytest.approx(80.0)], "B": [pytest.approx(40.0), pytest.approx(45.0)]}
    band = next(t for t in fig["data"] if t.get("fill") == "toself")
    assert band["legendgroup"] == "A" and max(band["y"]) == pytest.approx(80.0 + 100 * math.sqrt(0.02))
    assert sum(t.get("fill") == "toself" for t in fig["data"]) == 1  # one run: no band


# ---------------------------------------------------------------- path weights
def weight_rows(run_id: str, path_id: str, by_step: dict[int, float]) -> list[tuple]:
    return [(run_id, "main", step, 0, f"weight/path:{path_id}", w) for step, w in by_step.items()]


def test_final_path_weights_take_each_runs_last_step_and_average_seeds() -> None:
    frame = metrics(weight_rows("a0", "kd", {20: 0.6, 0: 1.0, 10: 0.8}) + weight_rows("a1", "kd", {0: 1.0, 20: 0.4})
                    + weight_rows("a0", "at", {0: 1.0, 20: 2.0}) + weight_rows("a1", "at", {20: 3.0})
                    + weight_rows("b0", "kd", {0: 1.0, 30: 0.2})
                    + [("a0", "main", 20, 0, "weight/task", 5.0), ("a0", "teacher:t", 40, 0, "weight/path:kd", 9.0)])
    per_run = run_final_weights(frame)
    assert per_run.loc["a0", "kd"] == 0.6 and per_run.loc["a1", "at"] == 3.0 and "task" not in per_run.columns
    table = path_final_weights(frame, pd.Series({"a0": "A", "a1": "A", "b0": "B"}), ["kd", "at", "disabled"])
    assert list(table.columns) == ["kd", "at"] and list(table.index) == ["A", "B"]  # spec order; no empty column
    assert table.loc["A", "kd"] == pytest.approx(0.5) and table.loc["A", "at"] == pytest.approx(2.5)
    assert table.loc["B", "kd"] == pytest.approx(0.2) and math.isnan(table.loc["B", "at"])

    fig = path_weights_figure(table, ["kd", "at"])
    assert [(t["name"], t["marker"]["color"]) for t in fig["data"]] == [("kd", path_color("kd", ["kd", "at"])),
                                                                       ("at", path_color("at", ["kd", "at"]))]
    assert fig["data"][1]["y"] == [pytest.approx(2.5), None]  # a gap, not a zero, where no run has the path
    assert fig["layout"]["yaxis"]["title"]["text"] == "final path weight"


# ---------------------------------------------------------------- figures
def test_parcoords_carries_every_varied_field_and_the_accuracy() -> None:
    frame, fields = factorial(lambda lr, weighting, temperature: 0.5 + lr)
    frame.loc["r0", FINAL] = float("nan")  # still running: no colour, so no line
    fig = parcoords_figure(frame, fields, {LR, TEMPERATURE}, FINAL)
    (trace,) = fig["data"]
    dims = {d["label"]: d for d in trace["dimensions"]}
    assert list(dims) == [*fields, "final accuracy (%)"]
    assert dims[WEIGHTING]["ticktext"] == sorted(WEIGHTINGS) and dims[WEIGHTING]["tickvals"] == [0, 1, 2]
    names = [dims[WEIGHTING]["ticktext"][code] for code in dims[WEIGHTING]["values"]]
    assert names == list(frame[WEIGHTING].iloc[1:])  # each run's own category
    assert dims[LR]["values"] == list(frame[LR].iloc[1:]) and "ticktext" not in dims[LR]
    assert trace["line"]["color"] == [pytest.approx(100 * (0.5 + lr)) for lr in frame[LR].iloc[1:]]
    assert trace["line"]["colorbar"]["title"]["text"] == "final accuracy (%)"


def test_parcoords_without_any_accuracy_says_so() -> None:
    frame, fields = factorial(lambda lr, weighting, temperature: float("nan"))
    with pytest.raises(ValueError, match="no selected run has a final accuracy yet"):
        parcoords_figure(frame, fields, set(), FINAL)


def test_figures_with_nothing_to_draw_say_what_is_missing() -> None:
    # st.plotly_chart refuses a figure without traces, so the page needs a message instead
    frame = metrics(acc_rows("a0", [0.5]))
    configs = pd.Series({"a0": "A"})
    with pytest.raises(ValueError, match="no selected run has logged acc/val yet"):
        band_figure(epoch_bands(frame, configs, "acc/val"), "acc/val")
    with pytest.raises(ValueError, match=r"no selected run has logged a path weight \(weight/path:<id>\) yet"):
        path_weights_figure(path_final_weights(frame, configs, ["kd"]), ["kd"])


def test_spec_text_is_escaped_before_plotly_reads_its_tags() -> None:
    specs = {f"r{i}": tiny_spec_dict(dataset={"name": "image_folder", "root": root}) for i, root in
             enumerate(["<a href='http://x'>data</a>", "/data/a&b\x1b[2J"])}
    sweep = varied_fields(specs)
    frame = sweep_frame(sweep, {"r0": 0.5, "r1": 0.6}, {})
    (trace,) = parcoords_figure(frame, sweep.fields, sweep.numeric, FINAL)["data"]
    # markup escaped, the terminal escape sequence dropped
    assert trace["dimensions"][0]["ticktext"] == ["/data/a&amp;b", "&lt;a href='http://x'&gt;data&lt;/a&gt;"]
    bands = epoch_bands(metrics(acc_rows("r0", [0.5])), sweep.configs, "acc/test")
    assert band_figure(bands, "acc/test")["data"][0]["name"] == "dataset.root=&lt;a href='http://x'&gt;data&lt;/a&gt;"


def test_importance_figure_has_both_measures_with_titled_axes() -> None:
    frame, fields = factorial(lambda lr, weighting, temperature: 0.5 + lr)
    table = parameter_importance(frame, fields, FINAL)
    fig = importance_figure(table)
    assert [t["name"] for t in fig["data"]] == ["|Spearman ρ|", "random-forest importance"]
    assert fig["data"][1]["y"] == pytest.approx(list(table["rf_importance"]))
    assert fig["layout"]["xaxis"]["title"]["text"] == "spec field"
    assert fig["layout"]["yaxis"]["title"]["text"] == "importance (0 to 1)"


def test_figures_are_valid_plotly_and_plain_json() -> None:
    frame, fields = factorial(lambda lr, weighting, temperature: 0.5 + lr)
    bands = epoch_bands(metrics(acc_rows("a0", [0.5, 0.7]) + acc_rows("a1", [0.6, 0.9])),
                        pd.Series({"a0": "A", "a1": "A"}), "acc/test")
    weights = path_final_weights(metrics(weight_rows("a0", "kd", {0: 1.0})), pd.Series({"a0": "A"}), ["kd"])
    for fig in (parcoords_figure(frame, fields, {LR, TEMPERATURE}, FINAL),
                importance_figure(parameter_importance(frame, fields, FINAL)),
                band_figure(bands, "acc/test"), path_weights_figure(weights, ["kd"])):
        json.dumps(fig, allow_nan=False)  # what a report writes; NaN would not be JSON
        go.Figure(fig)  # plotly's validation: every property name and value is one plotly.js knows
