"""The Negative transfer page (AppTest through app/main.py) on synthetic runs, and Configure's diagnostics toggle."""
from __future__ import annotations

from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from app.diagnostics_charts import HEATMAPS
from engine.ablation import group_id_of, submit_ablation
from engine.spec import spec_from_yaml
from engine.store import Store
from synthetic_runs import (
    DIAG_STEPS, PATH_IDS, add_diagnosed_run, add_finished_run, diag_metrics, diag_value, path_weight, spec_yaml,
)
from test_pages import button, decode, figure_titled, open_page, texts

LOGITS, HINT = PATH_IDS


def verdict_table(at):
    return next(d.value for d in at.dataframe if "mean_cos_task" in d.value.columns)


def ablation_frame(at):
    return next(d.value for d in at.dataframe if "acc_without" in d.value.columns)


def test_heatmaps_draw_the_stored_measurements(workspace: Path) -> None:
    run_id = add_diagnosed_run(workspace)
    at = open_page("negative_transfer", selected_run=run_id)
    assert at.title[0].value == "Negative transfer"
    for measure, heatmap in HEATMAPS.items():
        (trace,) = figure_titled(at, heatmap.title)["data"]
        assert trace["type"] == "heatmap" and list(trace["y"]) == PATH_IDS  # spec order
        assert decode(trace["x"]) == DIAG_STEPS
        expected = [[diag_value(measure, i, step) for step in DIAG_STEPS] for i in range(len(PATH_IDS))]
        np.testing.assert_allclose(decode(trace["z"]), expected)
        assert trace["zmid"] == 0


def test_verdict_table_shows_the_stored_verdicts(workspace: Path) -> None:
    run_id = add_diagnosed_run(workspace)
    at = open_page("negative_transfer", selected_run=run_id)
    table = verdict_table(at)
    assert table["path"].tolist() == PATH_IDS
    assert table["verdict"].tolist() == [["helps"], ["hurts"]]
    assert table["first_flag_step"].tolist()[1] == 20 and table["first_flag_step"].isna().tolist()[0]
    recent = DIAG_STEPS[-8:]
    assert table["mean_cos_task"].tolist()[1] == pytest.approx(sum(diag_value("cos_task", 1, s) for s in recent) / 8)


def test_flagged_path_weights_mark_the_flagging_step(workspace: Path) -> None:
    run_id = add_diagnosed_run(workspace)
    at = open_page("negative_transfer", selected_run=run_id)
    figure = figure_titled(at, "Weight on the flagged paths")
    (line,) = figure["data"]  # only p-hint was flagged
    assert line["name"] == HINT
    assert decode(line["y"]) == pytest.approx([path_weight(1, s) for s in DIAG_STEPS])
    (mark,) = figure["layout"]["shapes"]
    assert mark["x0"] == mark["x1"] == 20 and mark["line"]["dash"] == "dash"


def test_a_run_still_training_shows_its_verdicts_so_far(workspace: Path) -> None:
    with closing(Store(workspace)) as store:
        run_id = store.create_run(spec_yaml("training"), name="training")
        store.add_metrics(run_id, diag_metrics())
        store.claim_run("test", run_id)
    at = open_page("negative_transfer", selected_run=run_id)
    table = verdict_table(at)
    assert table["verdict"].tolist() == [["helps"], ["hurts"]]
    assert table["first_flag_step"].tolist()[1] == 20
    assert "still training" in texts(at.caption)


def test_a_run_without_diagnostics_says_how_to_turn_them_on(workspace: Path) -> None:
    run_id = add_finished_run(workspace)
    at = open_page("negative_transfer", selected_run=run_id)
    message = texts(at.info)
    assert "diagnostics: {enabled: true}" in message and "Negative-transfer diagnostics" in message
    assert "digits_planted.yaml" in texts(at.markdown)
    assert not at.get("plotly_chart")
    button(at, "Run the planted-defect demo").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with closing(Store(workspace, readonly=True)) as store:
        demo = next(r for r in store.list_runs() if r.id != run_id)
    assert demo.name == "digits-planted" and demo.status == "queued"
    assert at.session_state["selected_run"] == demo.id
    assert "Diagnostics are on for this run" in texts(at.info)  # the page now shows the queued demo


def test_ablation_button_queues_every_variant_in_one_group(workspace: Path) -> None:
    run_id = add_diagnosed_run(workspace)
    at = open_page("negative_transfer", selected_run=run_id)
    button(at, "Run ablation").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with closing(Store(workspace, readonly=True)) as store:
        runs = [r for r in store.list_runs() if r.id != run_id]
    assert len(runs) == 2 * len(PATH_IDS) + 1
    assert {r.group_id for r in runs} == {group_id_of(run_id)} and {r.status for r in runs} == {"queued"}
    assert f"Queued 5 runs in group `{group_id_of(run_id)}`" in texts(at.success)
    assert not any(b.label == "Run ablation" for b in at.button)
    assert ablation_frame(at)["status"].tolist() == ["pending", "pending"]
    assert "0 / 5 ablation runs done" in at.get("progress")[0].proto.text


def test_a_finished_ablation_shows_each_paths_effect(workspace: Path) -> None:
    run_id = add_diagnosed_run(workspace, test_acc=0.90)
    with closing(Store(workspace)) as store:
        group_id = submit_ablation(store, run_id)
        accuracy = {f"without {LOGITS}": 0.86, f"without {HINT}": 0.94, f"only {LOGITS}": 0.91,
                    f"only {HINT}": 0.75, "no paths": 0.85}
        for run in store.list_runs(group_id=group_id):
            store.finish_run(run.id, "done", result={"test_acc": accuracy[run.name.split(" · ", 1)[1]]})
    at = open_page("negative_transfer", selected_run=run_id)
    table = ablation_frame(at)
    assert table["path"].tolist() == PATH_IDS
    assert table["effect"].tolist() == pytest.approx([4.0, -4.0])
    assert table["alone_gain"].tolist() == pytest.approx([6.0, -10.0])
    assert table["measured"].tolist() == [["helps"], ["hurts"]]
    assert table["agrees"].tolist() == [True, True] and table["status"].tolist() == ["done", "done"]
    assert "5 / 5 ablation runs done" in at.get("progress")[0].proto.text
    bars = {t["name"]: t for t in figure_titled(at, "Measured effect of each path")["data"]}
    assert list(bars["hurts"]["x"]) == [HINT] and decode(bars["hurts"]["y"]) == pytest.approx([-4.0])
    assert list(bars["helps"]["x"]) == [LOGITS] and bars["helps"]["marker"]["color"] == "#2CA02C"


# ---------------------------------------------------------------- Configure's toggle
def test_configure_turns_diagnostics_on(workspace: Path) -> None:
    at = open_page("configure")
    at.checkbox(key="cfg0.diagnostics.enabled").check().run()
    at.number_input(key="cfg0.diagnostics.every").set_value(7).run()
    assert not at.exception
    settings = at.session_state["cfg_spec"]["diagnostics"]
    assert settings["enabled"] is True and settings["every"] == 7
    assert "extra backward passes" in texts(at.caption)
    button(at, "Launch run").click().run()
    with closing(Store(workspace, readonly=True)) as store:
        (run,) = store.list_runs()
    diagnostics = spec_from_yaml(run.spec_yaml).diagnostics
    assert diagnostics.enabled and diagnostics.every == 7
