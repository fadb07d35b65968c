"""Uncertainty weighting: exp(-s_k) settles at 1/L_k; a digits run learns and logs the weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.aggregators import AGGREGATORS
from engine.runner import execute_run
from engine.store import run_dir
from engine.train import NullReporter
from tests.conftest import TWO_TEACHER_PATHS, step_ctx, two_teacher_spec

PATHS = TWO_TEACHER_PATHS


def digits_spec(aggregator: dict, epochs: int = 2):
    return two_teacher_spec(aggregator, PATHS, epochs)


_ctx = step_ctx


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
