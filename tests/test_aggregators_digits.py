"""Every registered aggregator completes a real digits run with two teachers and several paths."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine.aggregators import AGGREGATORS
from engine.runner import execute_run
from engine.spec import parse_spec
from engine.train import NullReporter
from tests.conftest import tiny_spec_dict, engine_cli

PATHS = [
    {"id": "cnn-kd", "teacher": "cnn", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
    {"id": "mlp-kd", "teacher": "mlp", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
    {"id": "cnn-at", "teacher": "cnn", "distiller": "at", "teacher_spot": "conv2", "student_spot": "conv2"},
    {"id": "cnn-fitnet", "teacher": "cnn", "distiller": "fitnet", "teacher_spot": "conv1", "student_spot": "conv1",
     "weight": 1.0},
]
#: what each aggregator records beyond the per-path weights every aggregator logs
ARRAYS = {"amtml": {"amtml/teacher_weights", "amtml/theta_norm"}, "sakd": {"sakd/decisions", "sakd/agent_losses"}}


def two_teacher_spec(aggregator: str) -> dict:
    # lookahead gates the paths by the negative-transfer probe: without diagnostics it is just `fixed`
    diagnostics = {"diagnostics": {"enabled": True, "every": 4}} if aggregator == "lookahead" else {}
    return tiny_spec_dict(
        dataset={"name": "digits", "batch_size": 32, "train_size": 600},
        teachers=[{"id": "cnn", "arch": "small_cnn", "source": {"kind": "train", "epochs": 3}},
                  {"id": "mlp", "arch": "mlp", "arch_params": {"hidden": [64]}, "source": {"kind": "train", "epochs": 3}}],
        student={"arch": "small_cnn", "arch_params": {"width": 16}},
        paths=PATHS, aggregator={"name": aggregator}, epochs=2, telemetry_every=5, log_every=2, **diagnostics,
    )


def test_the_twelve_are_registered() -> None:
    assert AGGREGATORS.names() == sorted(["equal", "fixed", "uncertainty", "adaptive_distillation", "gradnorm", "dwa",
                                          "mgda", "pcgrad", "amtml", "sakd", "dfa", "lookahead"])
    listed = engine_cli("aggregators").stdout.splitlines()
    # plugin lines start at column 0; their parameters follow, indented
    assert [line.split()[0] for line in listed if line.strip() and not line[0].isspace()] == AGGREGATORS.names()


@pytest.mark.parametrize("name", AGGREGATORS.names())
def test_aggregator_completes_a_two_teacher_digits_run(name: str, home: Path) -> None:
    reporter = NullReporter()
    result = execute_run(parse_spec(two_teacher_spec(name)), f"run-{name}", home, reporter)
    assert 0.0 <= result["test_acc"] <= 1.0
    for path in PATHS:
        weights = reporter.series(f"weight/path:{path['id']}")
        losses = reporter.series(f"loss/path:{path['id']}")
        assert weights and len(weights) == len(losses), path["id"]
        assert all(math.isfinite(w) for w in weights + losses)
    recorded = {key for phase, _, _, key, _ in reporter.arrays if phase == "main"}
    assert ARRAYS.get(name, set()) <= recorded
    if name in ARRAYS:
        assert "labels" in recorded  # per-class views of the arrays need the labels of the same samples
