"""Real adaptive runs (trained here on digits) drawn by the Live and Teacher importance pages.

The synthetic-run page tests pin the chart logic; these check the whole chain: what the engine's
path methods and weightings log and record is what the pages draw.
"""
from __future__ import annotations

import threading
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from app.terms import term_label
from engine.spec import parse_spec, spec_to_yaml
from engine.store import Store, init_workspace
from engine.worker import execute_claimed
from page_helpers import decode, figure_titled, open_page, traces_of
from tests.conftest import tiny_spec_dict

TEACHERS = [{"id": "cnn", "arch": "small_cnn", "source": {"kind": "train", "epochs": 3}},
            {"id": "mlp", "arch": "mlp", "arch_params": {"hidden": [64]}, "source": {"kind": "train", "epochs": 3}},
            {"id": "r14", "arch": "resnet14", "source": {"kind": "train", "epochs": 2}}]
PATHS = {
    "amtml": [{"id": f"{t}-kd", "teacher": t, "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}
              for t in ("cnn", "mlp", "r14")],
    "sakd": [{"id": "cnn-at", "teacher": "cnn", "distiller": "at", "teacher_spot": "conv1", "student_spot": "conv1"},
             {"id": "cnn-kd", "teacher": "cnn", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
             {"id": "mlp-kd", "teacher": "mlp", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}],
    "dfa": [{"id": "r14-at", "teacher": "r14", "distiller": "at", "teacher_spot": "layer2", "student_spot": "conv1"},
            {"id": "cnn-kd", "teacher": "cnn", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"}],
}
PARAMS = {"dfa": {"search_epochs": 1, "b_lr": 0.05}}
# AMTML is weighted by uncertainty, so one run has a method's terms and a weighting's own term
WEIGHTING = {"amtml": "uncertainty", "sakd": "fixed", "dfa": "fixed"}


def _spec(method: str) -> dict:
    used = {p["teacher"] for p in PATHS[method]}
    return tiny_spec_dict(
        name=f"real-{method}", dataset={"name": "digits", "batch_size": 32, "train_size": 400},
        teachers=[t for t in TEACHERS if t["id"] in used], student={"arch": "small_cnn", "arch_params": {"width": 16}},
        paths=PATHS[method], method={"name": method, "params": PARAMS.get(method, {})},
        weighting={"name": WEIGHTING[method]}, epochs=2, log_every=2, telemetry_every=4)


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    home = init_workspace(tmp_path_factory.mktemp("real") / "ws")
    store = Store(home)
    runs = {}
    for name in PATHS:
        spec = parse_spec(_spec(name))
        run = store.claim_run("test", store.create_run(spec_to_yaml(spec), spec.name))
        assert execute_claimed(store, run, threading.Event()) is not None, store.get_run(run.id).error
        runs[name] = run.id
    return home, runs


@pytest.fixture
def workspace(real_runs, monkeypatch: pytest.MonkeyPatch) -> Path:
    home, _ = real_runs
    monkeypatch.setenv("PATHSCOPE_HOME", str(home))
    monkeypatch.setenv("PATHSCOPE_NO_AUTOWORKER", "1")
    return home


def _arrays(home: Path, run_id: str, key: str, phase: str = "main"):
    with closing(Store(home, readonly=True)) as store:
        return store.arrays(run_id, key, phase=phase)


def _metric(home: Path, run_id: str, key: str) -> list[float]:
    with closing(Store(home, readonly=True)) as store:
        return [r["value"] for r in store.metrics(run_id, keys=[key], phase="main")]


def _term_names(home: Path, run_id: str) -> list[str]:
    """Every term the run logged a weight of."""
    with closing(Store(home, readonly=True)) as store:
        keys = {r["key"] for r in store.metrics(run_id, phase="main")}
    return sorted(k[len("weight/"):] for k in keys if k.startswith("weight/"))


@pytest.mark.parametrize("name", list(PATHS))
def test_live_draws_every_terms_weight_and_their_stack_adds_up_to_the_total(workspace: Path, real_runs,
                                                                           name: str) -> None:
    run_id = real_runs[1][name]
    at = open_page("live", selected_run=run_id)
    names = _term_names(workspace, run_id)
    assert "task" in names
    weights = {t["name"]: t for t in figure_titled(at, "Term weights")["data"]}
    stack = {t["name"]: t for t in figure_titled(at, "What each term adds to the total loss")["data"]}
    assert set(weights) == {term_label(n) for n in names} and set(stack) == set(weights) | {"total loss (logged)"}
    for term in names:
        assert decode(weights[term_label(term)]["y"]) == pytest.approx(_metric(workspace, run_id, f"weight/{term}"))
    summed = np.sum([decode(stack[term_label(n)]["y"]) for n in names], axis=0)
    assert summed == pytest.approx(decode(stack["total loss (logged)"]["y"]), rel=1e-4, abs=1e-5)
    if name == "amtml":  # a method's terms and a weighting's own term, each in the stack
        assert {"amtml · fused KD", "uncertainty · regulariser"} <= set(stack)


def test_teacher_importance_shows_real_amtml_weights_on_the_simplex(workspace: Path, real_runs) -> None:
    run_id = real_runs[1]["amtml"]
    at = open_page("teacher_importance", selected_run=run_id)
    newest = _arrays(workspace, run_id, "amtml/teacher_weights")[-1]
    assert newest.columns == ["cnn", "mlp", "r14"]
    np.testing.assert_allclose(newest.values.sum(axis=1), 1.0, atol=1e-5)
    drawn = {}
    for trace in traces_of(at, "scatterternary"):
        rows = zip(decode(trace["customdata"]), decode(trace["a"]), decode(trace["b"]), decode(trace["c"]))
        drawn.update({int(sample): abc for sample, *abc in rows})
    expected = dict(zip(newest.index.tolist(), newest.values.tolist()))
    assert drawn.keys() == expected.keys()
    for sample, weights in expected.items():
        assert drawn[sample] == pytest.approx(weights, abs=1e-6)


def test_teacher_importance_shows_real_sakd_routing(workspace: Path, real_runs) -> None:
    run_id = real_runs[1]["sakd"]
    at = open_page("teacher_importance", selected_run=run_id)
    decisions = _arrays(workspace, run_id, "sakd/decisions")
    assert decisions[0].columns == ["conv1", "fc"]
    assert set(np.unique(np.concatenate([d.values.ravel() for d in decisions]))) <= {0.0, 1.0}
    lines = {t["name"]: t for t in figure_titled(at, "Fraction distilled")["data"]}
    expected = [d.values[:, 0].mean() for d in decisions]
    assert decode(lines["conv1"]["y"]) == pytest.approx(expected)


def test_teacher_importance_shows_real_dfa_alphas(workspace: Path, real_runs) -> None:
    run_id = real_runs[1]["dfa"]
    at = open_page("teacher_importance", selected_run=run_id)
    (alpha,) = _arrays(workspace, run_id, "dfa/alpha:conv1", phase="search")
    assert alpha.columns == ["layer2.0", "layer2.1"]
    assert alpha.values.sum() == pytest.approx(1.0, abs=1e-5)
    heatmap = next(t for t in traces_of(at, "heatmap") if list(t["y"]) == alpha.columns)
    assert np.asarray(decode(heatmap["z"])).ravel() == pytest.approx(alpha.values.ravel(), abs=1e-6)
