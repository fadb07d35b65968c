"""The Negative transfer page (AppTest through app/main.py) on synthetic runs, and Configure's diagnostics toggle.

Runs of the current engine carry the probe's series from tests/test_diagnostics_charts.engine_probes (fed
through the engine's own verdict update); runs of an older PathScope (lookahead, no measured effect) come
from synthetic_runs.add_diagnosed_run."""
from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from app.colors import VERDICT_COLORS
from app.diagnostics_charts import HEATMAPS
from app.widgets import EMPTY_RUNS_MESSAGE
from engine import catalog
from engine.ablation import group_id_of, submit_ablation
from engine.spec import spec_from_yaml
from engine.store import Store, init_workspace
from synthetic_runs import (
    DIAG_STEPS, PATH_IDS, RESULT, add_diagnosed_run, add_finished_run, diag_metrics, diag_value, path_weight,
    spec_yaml,
)
from page_helpers import button, decode, figure_titled, open_page, texts
from tests.test_diagnostics_charts import PROBE_STEPS, RULE, engine_probes, measured

LOGITS, HINT = PATH_IDS
#: ms per step of each time section; the probe's share is 2 / 25
STEP_TIMES = {"data": 3.0, "student": 10.0, "paths": 4.0, "backward": 6.0, "diagnostics": 2.0}


def verdict_table(at):
    return next(d.value for d in at.dataframe if "mean_cos_task" in d.value.columns)


def ablation_frame(at):
    return next(d.value for d in at.dataframe if "acc_without" in d.value.columns)


def chart_titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def measured_metrics() -> tuple[list[tuple[str, int, int, str, float]], dict[str, dict]]:
    """The probe's series of the current engine (measured effects) plus step times, and the engine's summary."""
    rows, evidence = engine_probes(PATH_IDS)
    times = [("main", step, 0, f"time/{section}", ms) for step in PROBE_STEPS for section, ms in STEP_TIMES.items()]
    return [("main", step, 0, key, value) for step, key, value in rows] + times, \
        {pid: evidence[pid].summary(RULE) for pid in PATH_IDS}


def add_measured_run(workspace: Path) -> tuple[str, dict[str, dict]]:
    """A finished run of the current engine, its verdict details in its result."""
    metrics, details = measured_metrics()
    run_id = add_finished_run(workspace, "measured", extra_metrics=metrics,
                              result={**RESULT, "verdicts": {p: d["verdict"] for p, d in details.items()},
                                      "verdict_details": details})
    return run_id, details


def add_training_run(workspace: Path, metrics: list[tuple[str, int, int, str, float]]) -> str:
    init_workspace(workspace)
    with closing(Store(workspace)) as store:
        run_id = store.create_run(spec_yaml("training"), name="training")
        store.add_metrics(run_id, metrics)
        store.claim_run("test", run_id)
    return run_id


def test_heatmaps_draw_the_measured_effect_and_the_cosines(workspace: Path) -> None:
    run_id, _ = add_measured_run(workspace)
    at = open_page("negative_transfer", selected_run=run_id)
    assert at.title[0].value == "Negative transfer"
    for measure in ("effect", "cos_task", "cos_val"):
        (trace,) = figure_titled(at, HEATMAPS[measure].title)["data"]
        assert trace["type"] == "heatmap" and list(trace["y"]) == PATH_IDS  # spec order, no row for the task
        assert decode(trace["x"]) == PROBE_STEPS
        expected = [[measured(i, n)[measure] for n in range(len(PROBE_STEPS))] for i in range(len(PATH_IDS))]
        np.testing.assert_allclose(decode(trace["z"]), expected)
        assert trace["zmid"] == 0
    assert HEATMAPS["lookahead"].title not in chart_titles(at)


def test_verdict_table_explains_each_verdict_and_the_probe_cost(workspace: Path) -> None:
    run_id, details = add_measured_run(workspace)
    at = open_page("negative_transfer", selected_run=run_id)
    table = verdict_table(at)
    assert table["path"].tolist() == PATH_IDS
    assert table["verdict"].tolist() == [["helps"], ["helps"]]
    assert table["cosine_verdict"].tolist() == [[details[p]["cosine_verdict"]] for p in PATH_IDS]
    assert table["raising"].tolist() == ["0 / 8", "0 / 8"]
    assert table["mean_effect"].tolist() == pytest.approx([details[p]["mean_effect"] for p in PATH_IDS])
    assert table["mean_task_effect"].tolist() == pytest.approx([details[p]["mean_task_effect"] for p in PATH_IDS])
    hint = table.iloc[1]
    assert (hint["first_flag_step"], hint["silenced_step"], hint["recovered_step"]) == (12, 32, 60)
    assert table["first_flag_step"].isna().tolist() == [True, False]
    lines = texts(at.markdown)
    for pid in PATH_IDS:
        assert details[pid]["explanation"] in lines and f">{pid}</span>" in lines
    assert "first flagged at step 12, silenced at step 32, no longer hurting from step 60" in lines
    assert "The probe took 8.0% of training step time (every 4 steps)." in texts(at.caption)
    assert "older PathScope" not in texts(at.caption)


def test_verdict_history_marks_the_flag_silencing_and_recovery(workspace: Path) -> None:
    run_id, _ = add_measured_run(workspace)
    at = open_page("negative_transfer", selected_run=run_id)
    traces = figure_titled(at, "Verdict over training")["data"]
    marks = {t["name"]: (decode(t["x"]), list(t["y"])) for t in traces if t["mode"] == "markers"}
    assert marks == {"first flagged": ([12], [HINT]), "silenced": ([32], [HINT]), "recovered": ([60], [HINT])}
    hurting = [t for t in traces if t["mode"] == "lines" and t["name"] == "hurts"]
    assert [{y for y in t["y"] if y is not None} for t in hurting] == [{HINT}]
    assert hurting[0]["line"]["color"] == VERDICT_COLORS["hurts"]


def test_a_run_still_training_replays_its_probes_like_the_engine(workspace: Path) -> None:
    metrics, details = measured_metrics()
    run_id = add_training_run(workspace, metrics)
    at = open_page("negative_transfer", selected_run=run_id)
    table = verdict_table(at)
    assert table["verdict"].tolist() == [["helps"], ["helps"]]
    hint = table.iloc[1]
    assert (hint["first_flag_step"], hint["silenced_step"], hint["recovered_step"]) == (12, 32, 60)
    assert table["mean_effect"].tolist() == pytest.approx([details[p]["mean_effect"] for p in PATH_IDS])
    assert all(details[pid]["explanation"] in texts(at.markdown) for pid in PATH_IDS)
    assert "still training" in texts(at.caption)
    assert "Verdict over training" in chart_titles(at)


def test_an_older_runs_page_shows_what_it_logged(workspace: Path) -> None:
    run_id = add_diagnosed_run(workspace)  # lookahead and cosine score, no measured effect, older details
    at = open_page("negative_transfer", selected_run=run_id)
    table = verdict_table(at)
    assert table["verdict"].tolist() == [["helps"], ["hurts"]]
    assert table["first_flag_step"].tolist()[1] == 20 and table["first_flag_step"].isna().tolist()[0]
    assert table["mean_effect"].isna().all() and table["raising"].isna().all()
    recent = DIAG_STEPS[-8:]
    assert table["mean_cos_task"].tolist()[1] == pytest.approx(sum(diag_value("cos_task", 1, s) for s in recent) / 8)
    assert "measured by an older PathScope" in texts(at.caption)
    (trace,) = figure_titled(at, HEATMAPS["lookahead"].title)["data"]
    np.testing.assert_allclose(decode(trace["z"])[1], [diag_value("lookahead", 1, s) for s in DIAG_STEPS])
    history = figure_titled(at, "Verdict over training")["data"]
    assert [(t["name"], decode(t["x"])) for t in history if t["mode"] == "markers"] == [("first flagged", [20])]


def test_an_older_run_still_training_shows_its_logged_verdicts(workspace: Path) -> None:
    run_id = add_training_run(workspace, diag_metrics())
    at = open_page("negative_transfer", selected_run=run_id)
    table = verdict_table(at)
    assert table["verdict"].tolist() == [["helps"], ["hurts"]]
    assert table["first_flag_step"].tolist()[1] == 20
    assert "measured by an older PathScope" in texts(at.caption)


def test_flagged_path_weights_mark_the_flagging_step(workspace: Path) -> None:
    run_id = add_diagnosed_run(workspace)
    at = open_page("negative_transfer", selected_run=run_id)
    figure = figure_titled(at, "Weight on the flagged paths")
    (line,) = figure["data"]  # only p-hint was flagged
    assert line["name"] == HINT
    assert decode(line["y"]) == pytest.approx([path_weight(1, s) for s in DIAG_STEPS])
    (mark,) = figure["layout"]["shapes"]
    assert mark["x0"] == mark["x1"] == 20 and mark["line"]["dash"] == "dash"


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


def test_a_workspace_left_with_only_ablation_runs_says_where_the_ablated_run_went(workspace: Path) -> None:
    run_id = add_diagnosed_run(workspace)
    with closing(Store(workspace)) as store:
        submit_ablation(store, run_id)
        catalog.archive(store, run_id)
    at = open_page("negative_transfer")
    assert not at.exception and not at.selectbox
    assert "Only ablation runs are listed" in texts(at.info) and EMPTY_RUNS_MESSAGE not in texts(at.info)
    restore = [el.proto for el in at.get("page_link") if el.proto.label == "Restore archived runs"]
    assert restore and "archived=1" in restore[0].query_string


# ---------------------------------------------------------------- Configure's toggle
def test_configure_turns_diagnostics_on(workspace: Path) -> None:
    at = open_page("configure")
    at.checkbox(key="cfg0.diagnostics.enabled").check().run()
    at.number_input(key="cfg0.diagnostics.every").set_value(7).run()
    at.checkbox(key="cfg0.diagnostics.geometry_confirms").uncheck().run()
    assert not at.exception
    settings = at.session_state["cfg_spec"]["diagnostics"]
    assert settings["enabled"] is True and settings["every"] == 7 and settings["geometry_confirms"] is False
    assert "extra backward passes" in texts(at.caption)
    button(at, "Launch run").click().run()
    with closing(Store(workspace, readonly=True)) as store:
        (run,) = store.list_runs()
    diagnostics = spec_from_yaml(run.spec_yaml).diagnostics
    assert diagnostics.enabled and diagnostics.every == 7 and not diagnostics.geometry_confirms
