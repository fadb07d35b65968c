"""Compare's sweep analysis through the page (AppTest): over a group whose accuracy depends on the weighting
only, the seed table gives each weighting's mean, parallel coordinates carry the varied field, importance
ranks it, and the view's report can be downloaded."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from synthetic_runs import add_finished_run
from app.sweep_view import MAX_AXES, parcoords_fields
from tests.page_helpers import open_page, texts

GROUP = "sweep-1"
ACCURACY = {"equal": (0.70, 0.72), "uncertainty": (0.90, 0.88)}  # two runs each: means 71 % and 89 %


@pytest.fixture
def sweep_group(workspace: Path) -> list[str]:
    return [add_finished_run(workspace, f"{weighting}-{i}", weighting=weighting, group_id=GROUP,
                             result={"test_acc": acc})
            for weighting, accs in ACCURACY.items() for i, acc in enumerate(accs)]


def test_the_sweep_of_a_group_names_what_varies_and_what_it_is_worth(sweep_group: list[str]) -> None:
    at = open_page("compare")
    assert "Sweep analysis" in texts(at.subheader)
    seeds = next(df.value for df in at.dataframe if "final_mean_pct" in df.value.columns)
    means = dict(zip(seeds["config"], seeds["final_mean_pct"]))
    assert means == pytest.approx({"weighting.name=uncertainty": 89.0, "weighting.name=equal": 71.0})
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    parcoords = next(s for s in specs if s["data"][0]["type"] == "parcoords")
    labels = [d["label"] for d in parcoords["data"][0]["dimensions"]]
    assert any("weighting.name" in label for label in labels)
    importance = next(s for s in specs if s["data"][0]["type"] == "bar" and "importance" in json.dumps(s["layout"]))
    assert importance["data"][0]["y"][0] == "weighting.name" or importance["data"][0]["x"][0] == "weighting.name"


def test_fewer_than_two_runs_in_the_view_say_what_to_do(workspace: Path) -> None:
    add_finished_run(workspace, "alone", group_id=GROUP)
    at = open_page("compare")
    assert "at least two runs" in texts(at.info)


def test_parallel_coordinates_keep_the_fields_that_matter_when_a_dozen_or_more_vary() -> None:
    fields = [f"f{i}" for i in range(20)]
    ranked = pd.DataFrame({"field": ["f7", "f3", "f19"]})  # what parameter importance could rank
    assert parcoords_fields(fields[:MAX_AXES], ranked) == fields[:MAX_AXES]  # few enough: all, in order
    kept = parcoords_fields(fields, ranked)
    assert len(kept) == MAX_AXES and kept[:3] == ["f7", "f3", "f19"] and kept[3:] == ["f0", "f1", "f2", "f4", "f5", "f6", "f8", "f9", "f10"]
    assert parcoords_fields(fields, None) == fields[:MAX_AXES]


def test_runs_of_different_setups_get_a_readable_chart_and_a_note(workspace: Path) -> None:
    for i in range(4):  # each run its own teachers: a score of teachers[...] fields differ at once
        add_finished_run(workspace, f"setup {i}", teacher_ids=tuple(f"t{i}{k}" for k in range(3)), group_id=GROUP,
                         result={"test_acc": 0.7 + 0.05 * i})
    at = open_page("compare")
    parcoords = next(s for s in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
                     if s["data"][0]["type"] == "parcoords")
    assert len(parcoords["data"][0]["dimensions"]) == MAX_AXES + 1  # the fields, then the accuracy
    assert "settings differ between these runs" in texts(at.caption)


def test_runs_of_one_accuracy_say_why_there_is_no_importance(workspace: Path) -> None:
    for weighting in ("equal", "dwa", "uncertainty", "mgda"):
        add_finished_run(workspace, weighting, weighting=weighting, group_id=GROUP, result={"test_acc": 0.8})
    at = open_page("compare")
    assert "every one of the 4 runs has 80.00%" in texts(at.info)
