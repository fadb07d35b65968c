"""Adaptive Distillation: exp(-s_k) settles at 1/(lambda_k L_k); per_loss shares one s per distiller type."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from engine.runner import execute_run
from engine.terms import TermInfo
from engine.train import NullReporter
from engine.weightings import WEIGHTINGS
from tests.conftest import TWO_TEACHER_PATHS, step_ctx, two_teacher_spec

PATHS = TWO_TEACHER_PATHS


def digits_spec(weighting: dict, epochs: int = 2):
    return two_teacher_spec(weighting, PATHS, epochs)


def _terms(weights: dict[str, float], kinds: dict[str, str] | None = None) -> list[TermInfo]:
    """One path term per id, at its base weight, computed by the distiller kinds[id] (kd by default)."""
    return [TermInfo(f"path:{pid}", w, path=pid, kind=(kinds or {}).get(pid, "kd")) for pid, w in weights.items()]


def _objective(weighting, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_k w_k L_k + the own terms, as the objective adds them (the task CE aside); and the weights."""
    weights = weighting.weigh(values, step_ctx(), None)
    return (weights * values).sum() + sum(weighting.own_values(values, step_ctx()).values()), weights.detach()


def _train_on_fixed_losses(weighting, fixed: dict[str, float], steps: int = 300) -> torch.Tensor:
    """Train s on held term values; returns exp(-s_g(k)) per term (the weight without a_d lambda_k)."""
    optimizer = torch.optim.SGD(weighting.parameters(), lr=0.5)
    values = torch.tensor(list(fixed.values()))
    for _ in range(steps):
        optimizer.zero_grad()
        _objective(weighting, values)[0].backward()
        optimizer.step()
    return torch.exp(-weighting.log_vars.detach())[weighting.group_of_term]


@pytest.mark.parametrize("a_d", [1.0, 3.0])
def test_layer_wise_weights_settle_at_the_inverse_weighted_loss(a_d: float) -> None:
    fixed, lambdas = {"a": 0.5, "b": 4.0, "c": 30.0}, {"a": 1.0, "b": 10.0, "c": 0.1}
    plain = WEIGHTINGS.get("adaptive_distillation")(_terms(lambdas), a_d=a_d)
    settled = _train_on_fixed_losses(plain, fixed)
    assert settled.tolist() == pytest.approx([1 / value for value in fixed.values()], rel=1e-4)
    scaled = WEIGHTINGS.get("adaptive_distillation")(_terms(lambdas), a_d=a_d, use_path_weights=True)
    settled = _train_on_fixed_losses(scaled, fixed)
    assert settled.tolist() == pytest.approx([1 / (lambdas[pid] * value) for pid, value in fixed.items()], rel=1e-4)
    # the logged weight is the whole multiplier a_d exp(-s) lambda_k
    weights = scaled.weigh(torch.tensor(list(fixed.values())), step_ctx(), None).detach()
    assert weights.tolist() == pytest.approx([a_d / value for value in fixed.values()], rel=1e-4)


def test_per_loss_shares_one_s_between_terms_of_the_same_distiller() -> None:
    fixed = {"a": 0.5, "b": 1.5, "c": 4.0}
    weighting = WEIGHTINGS.get("adaptive_distillation")(
        _terms({pid: 1.0 for pid in fixed}, {"a": "kd", "b": "kd", "c": "logits"}), variant="per_loss")
    assert weighting.group_names == ["kd", "logits"] and weighting.log_vars.shape == (2,)
    settled = _train_on_fixed_losses(weighting, fixed).tolist()
    assert settled[0] == settled[1] == pytest.approx(1 / (0.5 + 1.5), rel=1e-4)
    assert settled[2] == pytest.approx(1 / 4.0, rel=1e-4)


def test_the_total_is_ce_plus_scaled_losses_plus_regulariser() -> None:
    weighting = WEIGHTINGS.get("adaptive_distillation")(_terms({"a": 2.0, "b": 1.0}), a_d=0.5,
                                                        use_path_weights=True)
    assert [t.name for t in weighting.own_terms()] == ["adaptive_distillation/reg"]
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([0.0, 1.0]))
    total, weights = _objective(weighting, torch.tensor([2.0, 3.0]))
    e = math.exp(-1.0)
    assert total.item() == pytest.approx(0.5 * (2.0 * 2.0 + e * 3.0) + 0.5 * (0.0 + 1.0))  # the CE stays outside
    assert weights.tolist() == pytest.approx([0.5 * 2.0, 0.5 * e])


@pytest.mark.parametrize("params, name", [({"variant": "stage"}, "variant"), ({"a_d": 0}, "a_d"),
                                          ({"use_path_weights": "yes"}, "use_path_weights"), ({"beta": 1}, "beta")])
def test_bad_parameters_are_named(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        WEIGHTINGS.get("adaptive_distillation")(_terms({"a": 1.0}), **params)


def test_digits_run_per_loss_logs_one_weight_per_distiller_type(home: Path) -> None:
    reporter = NullReporter()
    spec = digits_spec({"name": "adaptive_distillation", "params": {"variant": "per_loss"}})
    result = execute_run(spec, "ad", home, reporter)
    assert result["test_acc"] > 0.3
    series = {p["id"]: reporter.series(f"weight/path:{p['id']}") for p in PATHS}
    assert all(s[0] == 1.0 and len(s) >= 5 for s in series.values())
    assert series["cnn-kd"] == series["mlp-kd"]  # both kd paths share one s
    assert series["cnn-kd"][-1] != series["cnn-at"][-1] != series["mlp-rkd"][-1]
    terms = [*(f"path:{p['id']}" for p in PATHS), "task", "adaptive_distillation/reg"]
    step_sum = sum(reporter.series(f"weight/{t}")[-1] * reporter.series(f"loss/{t}")[-1] for t in terms)
    assert step_sum == pytest.approx(reporter.series("loss/total")[-1], rel=1e-5)
