"""Uncertainty weighting: exp(-s_k) settles at 1/L_k; a digits run learns and logs the weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.aggregators import AGGREGATORS
from engine.paths.base import StepContext
from engine.runner import execute_run
from engine.spec import parse_spec
from engine.store import run_dir
from engine.train import NullReporter
from tests.conftest import tiny_spec_dict

PATHS = [{"id": "cnn-kd", "teacher": "cnn", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
         {"id": "cnn-at", "teacher": "cnn", "distiller": "at", "teacher_spot": "conv2", "student_spot": "conv2"},
         {"id": "mlp-kd", "teacher": "mlp", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
         {"id": "mlp-rkd", "teacher": "mlp", "distiller": "rkd", "teacher_spot": "pool", "student_spot": "pool"}]
TEACHER_SOURCE = {"kind": "train", "epochs": 2}


def digits_spec(aggregator: dict, epochs: int = 2):
    """Two inline teachers (small CNN, MLP), a small CNN student and four paths of three distillers."""
    return parse_spec(tiny_spec_dict(
        teachers=[{"id": "cnn", "arch": "small_cnn", "arch_params": {"width": 8}, "source": TEACHER_SOURCE},
                  {"id": "mlp", "arch": "mlp", "arch_params": {"hidden": [32]}, "source": TEACHER_SOURCE}],
        student={"arch": "small_cnn", "arch_params": {"width": 8}}, paths=PATHS, aggregator=aggregator, epochs=epochs))


def _ctx(step: int = 0) -> StepContext:
    return StepContext(labels=torch.zeros(1, dtype=torch.long), epoch=0, step=step, index=torch.zeros(1))


def test_weights_settle_at_half_the_inverse_loss() -> None:
    fixed = {"a": 0.5, "b": 4.0, "c": 30.0}
    agg = AGGREGATORS.get("uncertainty")(list(fixed), {pid: 1.0 for pid in fixed})
    optimizer = torch.optim.SGD(agg.student_optimized_parameters(), lr=1.0)
    losses = {"task": torch.tensor(0.3), **{f"path:{pid}": torch.tensor(v) for pid, v in fixed.items()}}
    for step in range(200):
        optimizer.zero_grad()
        _, weights = agg.backward(losses, _ctx(step))
        optimizer.step()
    for k, (pid, value) in enumerate(fixed.items()):
        assert torch.exp(-agg.log_vars[k]).item() == pytest.approx(1 / value, rel=1e-4)
        assert float(weights[pid]) == pytest.approx(0.5 / value, rel=1e-4)


def test_the_total_adds_the_log_variance_regulariser() -> None:
    agg = AGGREGATORS.get("uncertainty")(["a", "b"], {"a": 1.0, "b": 1.0})
    with torch.no_grad():
        agg.log_vars.copy_(torch.tensor([0.0, 1.0]))
    total, weights = agg.combine({"task": torch.tensor(1.0), "path:a": torch.tensor(2.0),
                                  "path:b": torch.tensor(3.0)}, _ctx())
    expected = 1.0 + (0.5 * 2.0 + 0.0) + (0.5 * torch.exp(torch.tensor(-1.0)) * 3.0 + 0.5)
    assert total.item() == pytest.approx(expected.item())
    assert float(weights["b"]) == pytest.approx(0.5 * torch.exp(torch.tensor(-1.0)).item())


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        AGGREGATORS.get("uncertainty")(["a"], {"a": 1.0}, alpha=1)


def test_digits_run_learns_the_weights_and_checkpoints_them(home: Path) -> None:
    reporter = NullReporter()
    result = execute_run(digits_spec({"name": "uncertainty"}), "u", home, reporter)
    assert result["test_acc"] > 0.3
    for path in PATHS:
        weights = reporter.series(f"weight/path:{path['id']}")
        assert weights[0] == 0.5 and weights[-1] != 0.5
    losses = {p["id"]: reporter.series(f"loss/path:{p['id']}")[0] for p in PATHS}
    assert reporter.series("loss/total")[0] == pytest.approx(
        reporter.series("loss/task")[0] + 0.5 * sum(losses.values()), rel=1e-5)
    saved = torch.load(run_dir(home, "u") / "checkpoints" / "last.pt", weights_only=True)
    assert saved["aggregator"]["log_vars"].shape == (len(PATHS),)
