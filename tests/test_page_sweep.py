"""Compare's sweep analysis through the page (AppTest): over a group whose accuracy depends on the weighting
only, the seed table gives each weighting's mean, parallel coordinates carry the varied field, importance
ranks it, and the view's report can be downloaded."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthetic_runs import add_finished_run
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
