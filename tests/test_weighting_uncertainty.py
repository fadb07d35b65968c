"""Uncertainty weighting: exp(-s_k) settles at 1/L_k; a digits run learns and logs the weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.runner import execute_run
from engine.store import run_dir
from engine.terms import TermInfo
from engine.train import NullReporter
from engine.weightings import WEIGHTINGS
from tests.conftest import TWO_TEACHER_PATHS, step_ctx, two_teacher_spec

PATHS = TWO_TEACHER_PATHS


def digits_spec(weighting: dict, epochs: int = 2):
    return two_teacher_spec(weighting, PATHS, epochs)


def _terms(ids: list[str]) -> list[TermInfo]:
    return [TermInfo(f"path:{pid}", 1.0, path=pid, kind="kd") for pid in ids]


def _total(weighting, values: torch.Tensor, ctx) -> tuple[torch.Tensor, torch.Tensor]:
    """What the objective adds up for the weighable terms: sum_k w_k L_k + the own terms; and the weights."""
    weights = weighting.weigh(values, ctx, None)
    return (weights * values).sum() + sum(weighting.own_values(values, ctx).values()), weights.detach()


def test_weights_settle_at_half_the_inverse_loss() -> None:
    fixed = {"a": 0.5, "b": 4.0, "c": 30.0}
    weighting = WEIGHTINGS.get("uncertainty")(_terms(list(fixed)))
    optimizer = torch.optim.SGD(weighting.parameters(), lr=1.0)
    values = torch.tensor(list(fixed.values()))
    for step in range(200):
        optimizer.zero_grad()
        total, weights = _total(weighting, values, step_ctx(step))
        total.backward()
        optimizer.step()
    for k, value in enumerate(fixed.values()):
        assert torch.exp(-weighting.log_vars[k]).item() == pytest.approx(1 / value, rel=1e-4)
        assert float(weights[k]) == pytest.approx(0.5 / value, rel=1e-4)


def test_the_total_adds_the_log_variance_regulariser() -> None:
    weighting = WEIGHTINGS.get("uncertainty")(_terms(["a", "b"]))
    assert [t.name for t in weighting.own_terms()] == ["uncertainty/reg"]
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([0.0, 1.0]))
    total, weights = _total(weighting, torch.tensor([2.0, 3.0]), step_ctx())
    expected = (0.5 * 2.0 + 0.0) + (0.5 * torch.exp(torch.tensor(-1.0)) * 3.0 + 0.5)
    assert total.item() == pytest.approx(expected.item())  # the task CE stays outside, at weight 1
    assert float(weights[1]) == pytest.approx(0.5 * torch.exp(torch.tensor(-1.0)).item())


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        WEIGHTINGS.get("uncertainty")(_terms(["a"]), alpha=1)


def test_digits_run_learns_the_weights_and_checkpoints_them(home: Path) -> None:
    reporter = NullReporter()
    result = execute_run(digits_spec({"name": "uncertainty"}), "u", home, reporter)
    assert result["test_acc"] > 0.3
    for path in PATHS:
        weights = reporter.series(f"weight/path:{path['id']}")
        assert weights[0] == 0.5 and weights[-1] != 0.5
    losses = {p["id"]: reporter.series(f"loss/path:{p['id']}")[0] for p in PATHS}
    assert reporter.series("loss/uncertainty/reg")[0] == 0.0 and reporter.series("weight/uncertainty/reg")[0] == 1.0
    assert reporter.series("loss/total")[0] == pytest.approx(
        reporter.series("loss/task")[0] + 0.5 * sum(losses.values()), rel=1e-5)
    saved = torch.load(run_dir(home, "u") / "checkpoints" / "last.pt", weights_only=True)
    assert saved["weighting"]["log_vars"].shape == (len(PATHS),)
