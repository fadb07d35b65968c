"""Every registered weighting and path method completes a real digits run with two teachers and several paths,
and at every logged step the logged terms add up to the logged total (every backpropagated term is named)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine.methods import METHODS
from engine.runner import execute_run
from engine.spec import parse_spec
from engine.train import NullReporter
from engine.vocabulary import LOSS_PREFIX, TOTAL_LOSS, WEIGHT_PREFIX
from engine.weightings import WEIGHTINGS
from tests.conftest import tiny_spec_dict

PATHS = [
    {"id": "cnn-kd", "teacher": "cnn", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
    {"id": "mlp-kd", "teacher": "mlp", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
    {"id": "cnn-at", "teacher": "cnn", "distiller": "at", "teacher_spot": "conv2", "student_spot": "conv2"},
    {"id": "cnn-fitnet", "teacher": "cnn", "distiller": "fitnet", "teacher_spot": "conv1", "student_spot": "conv1",
     "weight": 1.0},
]
#: what each plugin records beyond the terms every run logs
ARRAYS = {"amtml": {"amtml/teacher_weights", "amtml/theta_norm"}, "sakd": {"sakd/decisions", "sakd/agent_losses"},
          "camkd": {"camkd/teacher_weights"}, "ebkd": {"ebkd/teacher_weights"}, "min_ce": {"min_ce/teacher_weights"}}
#: the terms a method trains beyond the task (the plain method: one per path)
METHOD_TERMS = {
    None: {f"path:{p['id']}" for p in PATHS},
    "amtml": {"amtml/fused_kd", "amtml/hint:cnn-at", "amtml/hint:cnn-fitnet", "amtml/reg"},
    "sakd": {f"path:{p['id']}" for p in PATHS},
    "dfa": {f"path:{p['id']}" for p in PATHS},
    "camkd": {f"path:{p['id']}" for p in PATHS},
    "ebkd": {f"path:{p['id']}" for p in PATHS},
    "min_ce": {f"path:{p['id']}" for p in PATHS},
}
COMBINATIONS = [(w, None) for w in WEIGHTINGS.names()] + [("fixed", m) for m in METHODS.names()]


def two_teacher_spec(weighting: str, method: str | None) -> dict:
    # lookahead gates the paths by the negative-transfer probe: without diagnostics it is just `fixed`
    diagnostics = {"diagnostics": {"enabled": True, "every": 4}} if weighting == "lookahead" else {}
    return tiny_spec_dict(
        dataset={"name": "digits", "batch_size": 32, "train_size": 600},
        teachers=[{"id": "cnn", "arch": "small_cnn", "source": {"kind": "train", "epochs": 3}},
                  {"id": "mlp", "arch": "mlp", "arch_params": {"hidden": [64]}, "source": {"kind": "train", "epochs": 3}}],
        student={"arch": "small_cnn", "arch_params": {"width": 16}},
        paths=PATHS, weighting={"name": weighting}, method={"name": method} if method else None,
        epochs=2, telemetry_every=5, log_every=2, **diagnostics,
    )


def test_ten_weightings_and_six_methods_are_registered() -> None:
    assert WEIGHTINGS.names() == sorted(["equal", "fixed", "uncertainty", "adaptive_distillation", "gradnorm", "dwa",
                                         "mgda", "pcgrad", "lookahead", "loss_balance"])
    assert METHODS.names() == sorted(["amtml", "sakd", "dfa", "camkd", "ebkd", "min_ce"])


def logged_steps(reporter: NullReporter) -> dict[int, dict[str, float]]:
    steps: dict[int, dict[str, float]] = {}
    for phase, step, _epoch, key, value in reporter.rows:
        if phase == "main" and (key == TOTAL_LOSS or key.startswith((LOSS_PREFIX, WEIGHT_PREFIX))):
            steps.setdefault(step, {})[key] = value
    return {step: values for step, values in steps.items() if TOTAL_LOSS in values}


@pytest.mark.parametrize(("weighting", "method"), COMBINATIONS,
                         ids=[m or w for w, m in COMBINATIONS])
def test_a_run_completes_and_its_terms_add_up_to_the_total(weighting: str, method: str | None, home: Path) -> None:
    reporter = NullReporter()
    result = execute_run(parse_spec(two_teacher_spec(weighting, method)), f"run-{method or weighting}", home,
                         reporter)
    assert 0.0 <= result["test_acc"] <= 1.0
    steps = logged_steps(reporter)
    assert len(steps) >= 10
    for step, values in steps.items():
        terms = {key[len(WEIGHT_PREFIX):] for key in values if key.startswith(WEIGHT_PREFIX)}
        expected = {"task"} | METHOD_TERMS[method] | {t for t in terms if t.startswith(f"{weighting}/")}
        assert terms == expected, step
        assert {key[len(LOSS_PREFIX):] for key in values if key.startswith(LOSS_PREFIX)} - {"total"} == terms
        assert all(math.isfinite(values[f"{LOSS_PREFIX}{t}"]) and math.isfinite(values[f"{WEIGHT_PREFIX}{t}"])
                   for t in terms)
        weighted = math.fsum(values[f"{WEIGHT_PREFIX}{t}"] * values[f"{LOSS_PREFIX}{t}"] for t in terms)
        assert weighted == pytest.approx(values[TOTAL_LOSS], rel=1e-6, abs=1e-6), (step, values)
    recorded = {key for phase, _, _, key, _ in reporter.arrays if phase == "main"}
    assert ARRAYS.get(method, set()) <= recorded
    if method in ARRAYS:
        assert "labels" in recorded  # per-class views of the arrays need the labels of the same samples
