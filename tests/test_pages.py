"""Every page rendered by Streamlit's AppTest against a temporary workspace (no worker, no training)."""
from __future__ import annotations

import base64
import json
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app.widgets import EMPTY_RUNS_MESSAGE
from engine.store import Store
from synthetic_runs import PATH_IDS, STEPS, add_finished_run, path_loss

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "app" / "main.py"
TIMEOUT_S = 60  # the first run imports torch


def page(name: str) -> str:
    return str(ROOT / "pages" / f"{name}.py")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "ws"
    monkeypatch.setenv("PATHSCOPE_HOME", str(home))
    monkeypatch.setenv("PATHSCOPE_NO_AUTOWORKER", "1")
    return home


@pytest.fixture
def finished_run(workspace: Path) -> str:
    return add_finished_run(workspace)


def open_page(name: str, **state: object) -> AppTest:
    at = AppTest.from_file(str(MAIN), default_timeout=TIMEOUT_S)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if name != "home":
        at.switch_page(page(name)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def decode(array: object) -> list:
    """Plotly 7 writes numeric arrays as {'dtype', 'bdata' (base64)}; plain lists pass through."""
    if isinstance(array, dict) and "bdata" in array:
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"])).tolist()
    return list(array)


def plotly_traces(at: AppTest) -> list[list[dict]]:
    """The traces of every plotly chart on the page, one list per chart."""
    return [json.loads(el.proto.spec)["data"] for el in at.get("plotly_chart")]


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


# ---------------------------------------------------------------- Home
def test_home_pitches_lists_runs_and_offers_the_demo(finished_run: str) -> None:
    at = open_page("home")
    assert at.title[0].value == "PathScope"
    assert "Researchers" in texts(at.markdown)
    button(at, "Run the demo")
    assert finished_run in at.dataframe[0].value["id"].tolist()


def test_demo_button_queues_the_demo_and_opens_live(workspace: Path) -> None:
    at = open_page("home")
    button(at, "Run the demo").click().run()
    assert not at.exception
    with closing(Store(workspace, readonly=True)) as store:
        runs = store.list_runs()
    assert [r.status for r in runs] == ["queued"]
    assert at.session_state["selected_run"] == runs[0].id
    assert at.title[0].value == "Live"


# ---------------------------------------------------------------- Live
def test_live_draws_per_path_losses_and_accuracy(finished_run: str) -> None:
    at = open_page("live", selected_run=finished_run)
    assert at.title[0].value == "Live"
    assert not at.error
    charts = plotly_traces(at)
    loss = next(c for c in charts if any(t["name"] == "p-logits" and t["type"] == "scattergl" for t in c))
    traces = {t["name"]: t for t in loss}
    assert {"total", "task (CE)", *PATH_IDS} <= set(traces)
    for i, pid in enumerate(PATH_IDS):
        assert decode(traces[pid]["x"]) == STEPS
        assert decode(traces[pid]["y"]) == pytest.approx([path_loss(i, s) for s in STEPS])
    accuracy = next(c for c in charts if {t["name"] for t in c} == {"train", "val", "test"})
    val = next(t for t in accuracy if t["name"] == "val")
    assert decode(val["y"]) == pytest.approx([70.0, 80.0])
    # main loss + accuracy + path weights, then the inline teacher's loss + accuracy
    assert len(charts) == 5
    assert "test acc" in [m.label for m in at.metric]
    assert not any(b.label == "Cancel run" for b in at.button)  # a finished run cannot be cancelled


def test_live_offers_cancel_for_a_queued_run(workspace: Path, finished_run: str) -> None:
    with closing(Store(workspace)) as store:
        queued = store.create_run(store.get_run(finished_run).spec_yaml, name="waiting")
    at = open_page("live", selected_run=queued)
    assert "No worker is running" in texts(at.warning)
    button(at, "Cancel run").click().run()
    assert not at.exception
    with closing(Store(workspace, readonly=True)) as store:
        assert store.get_run(queued).status == "cancelled"


def test_live_shows_why_a_run_failed(workspace: Path, finished_run: str) -> None:
    with closing(Store(workspace)) as store:
        failed = store.create_run(store.get_run(finished_run).spec_yaml, name="diverged")
        store.finish_run(failed, "failed", error="loss became NaN at step 40")
    at = open_page("live", selected_run=failed)
    assert "loss became NaN at step 40" in texts(at.error)
    assert EMPTY_RUNS_MESSAGE not in texts(at.info)


# ---------------------------------------------------------------- Compare
def test_compare_lists_runs_and_overlays_a_metric(workspace: Path, finished_run: str) -> None:
    other = add_finished_run(workspace, "other", aggregator="fixed")
    at = open_page("compare")
    table = at.dataframe[0].value
    assert set(table["id"]) == {finished_run, other}
    assert set(table["aggregator"]) == {"equal", "fixed"}
    assert at.selectbox[0].value == "acc/val"
    (chart,) = plotly_traces(at)
    assert len(chart) == 2 and all(t["type"] == "scattergl" for t in chart)
    assert decode(chart[0]["y"]) == pytest.approx([70.0, 80.0])
    assert at.get("download_button")


# ---------------------------------------------------------------- Configure
def test_configure_default_spec_is_valid(workspace: Path) -> None:
    at = open_page("configure")
    assert not at.error, texts(at.error)
    assert "The spec is valid." in texts(at.success)
    assert not button(at, "Launch run").disabled
    assert at.text_input[0].value == "digits-kd-demo"


def test_configure_names_the_field_of_an_invalid_edit(workspace: Path) -> None:
    at = open_page("configure")
    at.session_state["cfg0.paths.0"] = {
        "edited_rows": {0: {"teacher_spot": "layer9"}}, "added_rows": [], "deleted_rows": [],
    }
    at.run()
    assert not at.exception
    errors = texts(at.error)
    assert "paths[0].teacher_spot" in errors and "layer9" in errors
    assert button(at, "Launch run").disabled


def test_configure_table_edits_are_applied_once(workspace: Path) -> None:
    at = open_page("configure")
    new_path = {"id": "second", "teacher": "cnn", "teacher_spot": "fc", "student_spot": "fc", "distiller": "kd"}
    at.session_state["cfg0.paths.0"] = {"edited_rows": {}, "added_rows": [new_path], "deleted_rows": []}
    at.run()
    at.run()  # a later rerun must not add the row again
    assert not at.exception
    paths = at.session_state["cfg_spec"]["paths"]
    assert [p["id"] for p in paths] == ["cnn-kd", "second"]
    assert paths[1]["enabled"] is True and paths[1]["weight"] is None
    assert at.data_editor[1].value["id"].tolist() == ["cnn-kd", "second"]
    assert "The spec is valid." in texts(at.success)


def test_configure_adds_candidate_paths_once(workspace: Path) -> None:
    at = open_page("configure")
    button(at, "Add candidate paths").click().run()
    button(at, "Add candidate paths").click().run()  # a second click adds nothing new
    assert not at.exception
    paths = at.session_state["cfg_spec"]["paths"]
    # small_cnn teacher -> mlp student on digits: pool->pool (off) and the existing logits path
    assert [(p["teacher_spot"], p["student_spot"], p["enabled"]) for p in paths] == [
        ("fc", "fc", True), ("pool", "pool", False)]
    assert paths[1]["id"] == "cnn-rkd-pool"
    assert "The spec is valid." in texts(at.success)


def test_configure_renamed_teacher_keeps_its_paths(workspace: Path) -> None:
    at = open_page("configure")
    at.session_state["cfg0.teachers.0"] = {"edited_rows": {0: {"id": "big"}}, "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.exception
    spec = at.session_state["cfg_spec"]
    assert spec["teachers"][0]["id"] == "big" and spec["paths"][0]["teacher"] == "big"
    assert spec["teachers"][0]["source"]["optimizer"]["lr"] == 0.05  # kept though the table does not show it
    assert "The spec is valid." in texts(at.success)


def test_configure_launch_queues_the_spec(workspace: Path) -> None:
    at = open_page("configure")
    button(at, "Launch run").click().run()
    assert not at.exception
    with closing(Store(workspace, readonly=True)) as store:
        (run,) = store.list_runs()
    assert run.status == "queued" and run.name == "digits-kd-demo"
    assert at.title[0].value == "Live"


def test_configure_saves_an_imported_checkpoint(workspace: Path) -> None:
    at = open_page("configure")
    at.file_uploader(key="cfg_ckpt").set_value(("../my teacher.pt", b"weights", "application/octet-stream")).run()
    assert not at.exception
    saved = workspace / "uploads" / "my_teacher.pt"
    assert saved.read_bytes() == b"weights"
    assert str(saved) in texts(at.success)


def test_configure_upload_fills_the_form_or_names_the_problem(workspace: Path) -> None:
    at = open_page("configure")
    uploader = at.file_uploader(key="cfg_upload")
    uploader.set_value(("broken.yaml", b"name: [unclosed", "application/x-yaml")).run()
    assert not at.exception
    assert "broken.yaml was not loaded" in texts(at.error)
    assert at.text_input[0].value == "digits-kd-demo"  # the form is untouched

    good = (ROOT / "assets" / "configs" / "digits_kd.yaml").read_text().replace("digits-kd-demo", "uploaded-run")
    at.file_uploader(key="cfg_upload").set_value(("good.yaml", good.encode(), "application/x-yaml")).run()
    assert not at.exception
    assert "Loaded good.yaml" in texts(at.success)
    assert at.text_input[0].value == "uploaded-run"


# ---------------------------------------------------------------- empty workspace
@pytest.mark.parametrize("name", ["home", "live", "compare"])
def test_empty_workspace_says_what_to_do(workspace: Path, name: str) -> None:
    at = open_page(name)
    assert EMPTY_RUNS_MESSAGE in texts(at.info)
    assert not at.error
