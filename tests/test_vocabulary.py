"""One vocabulary: the engine and the pages name metric keys, phases, spots and time sections from
engine/vocabulary.py, and plugin telemetry reaches Teacher importance through its declaration alone."""
from __future__ import annotations

import ast
import json
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app import charts, telemetry_views
from engine import vocabulary as v
from engine.methods import METHODS
from engine.methods.base import PathMethod
from engine.weightings import WEIGHTINGS
from engine.weightings.equal import Equal
from engine.store import Store
from engine.telemetry import Recorded
from engine.train import StepTimer
from synthetic_runs import TELEMETRY_STEPS, _labels_row, add_finished_run, epoch_of

ROOT = Path(__file__).resolve().parents[1]
# Strings the engine writes; app/ and pages/ must take them from engine.vocabulary (or a plugin's declaration).
ENGINE_WORDS = ("loss/", "weight/", "acc/", "time/", "throughput/", "diag/", "agree/", "teacher:",
                "amtml/", "sakd/", "dfa/", "system/")
ENGINE_NAMES = {"main", "search", "fc", "labels"}  # ("explain" is also a job kind, "lr" a spec field)


def test_step_timer_sections_are_the_vocabulary_and_the_charts():
    assert StepTimer.SECTIONS is v.TIME_SECTIONS and charts.TIME_SECTIONS is v.TIME_SECTIONS


def test_metric_keys_are_built_from_the_prefixes():
    assert v.weight_key(v.path_key("a")).startswith(v.PATH_WEIGHT_PREFIX)
    assert v.loss_key(v.path_key("a")).startswith(v.PATH_LOSS_PREFIX)
    assert v.teacher_of_phase(v.teacher_phase("t1")) == "t1" and v.is_teacher_phase(v.teacher_phase("x"))
    assert {v.VERDICT_OF_CODE[int(code)] for code in v.VERDICT_CODE.values()} == {v.HELPS, v.NEUTRAL, v.HURTS}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            found.add(id(body[0].value))
    return found


def spelled_engine_words(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value
            if text.startswith(ENGINE_WORDS) or text in ENGINE_NAMES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {text!r}")
    return found


def test_app_and_pages_do_not_spell_engine_keys():
    spelled = [hit for folder in ("app", "pages") for path in sorted((ROOT / folder).glob("*.py"))
               for hit in spelled_engine_words(path)]
    assert spelled == [], "import these from engine.vocabulary:\n" + "\n".join(spelled)


@pytest.mark.parametrize("plugin", [pytest.param(e.obj, id=e.name) for registry in (METHODS, WEIGHTINGS)
                                    for e in registry if e.obj.telemetry is not None])
def test_every_declared_telemetry_has_a_view(plugin):
    panel = plugin.telemetry
    assert panel.view in telemetry_views.VIEWS and panel.view in v.VIEWS
    for array in panel.arrays:
        assert len(array.axes) == 2 and array.meaning


@pytest.mark.parametrize(("registry", "base"), [(METHODS, PathMethod), (WEIGHTINGS, Equal)],
                         ids=["method", "weighting"])
def test_the_page_draws_a_new_plugins_declared_telemetry(workspace: Path, registry, base):
    """A path method or weighting that declares a teacher_weights panel is drawn on Teacher importance with no
    page edit."""
    panel = v.TelemetryPanel(
        title="Planted · teacher shares", caption="a test plugin", view=v.TEACHER_WEIGHTS_VIEW, when="always",
        arrays=(v.TelemetryArray("weights", "planted/shares", ("sample", "teacher"), "share per teacher"),))

    class Planted(base):
        telemetry = panel

    registry.register("planted_shares", "a test plugin with telemetry")(Planted)
    try:
        rng = np.random.default_rng(0)
        rows = []
        for step in TELEMETRY_STEPS:
            ids = np.arange(8, dtype=np.int64) + step
            shares = rng.dirichlet([1.0, 1.0], size=8).astype(np.float32)
            rows.append((v.MAIN_PHASE, step, epoch_of(step), "planted/shares", Recorded(shares, ids, ["a", "b"])))
            rows.append(_labels_row(step, ids, (ids % 10).astype(np.float32)))
        plugin = {"method": "planted_shares"} if registry is METHODS else {"weighting": "planted_shares"}
        run_id = add_finished_run(workspace, "planted", teacher_ids=("a", "b"), arrays=rows, **plugin)
        at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=180)
        at.session_state["selected_run"] = run_id
        at.run()
        at.switch_page(str(ROOT / "pages" / "teacher_importance.py")).run()
        assert not at.exception and not at.error
        assert "Planted · teacher shares" in [h.value for h in at.header]
        titles = [json.loads(c.proto.spec)["layout"].get("title", {}).get("text", "") for c in at.get("plotly_chart")]
        assert any(t.startswith("Per-instance teacher weights") for t in titles), titles
        with closing(Store(workspace, readonly=True)) as store:
            last = store.arrays(run_id, "planted/shares")[-1]
        assert last.values.shape == (8, 2)
    finally:
        registry._entries.pop("planted_shares", None)
