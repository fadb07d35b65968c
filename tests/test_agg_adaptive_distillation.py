"""Adaptive Distillation: exp(-s_k) settles at 1/(lambda_k L_k); per_loss shares one s per distiller type."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from engine.aggregators import AGGREGATORS
from engine.aggregators.adaptive_distillation import distiller_name
from engine.paths import DISTILLERS
from engine.runner import execute_run
from engine.train import NullReporter
from tests.conftest import TWO_TEACHER_PATHS, step_ctx, two_teacher_spec

PATHS = TWO_TEACHER_PATHS


def digits_spec(aggregator: dict, epochs: int = 2):
    return two_teacher_spec(aggregator, PATHS, epochs)


_ctx = step_ctx


def _train_on_fixed_losses(agg, fixed: dict[str, float], steps: int = 300) -> dict[str, torch.Tensor]:
    optimizer = torch.optim.SGD(agg.student_optimized_parameters(), lr=0.5)
    losses = {"task": torch.tensor(0.3), **{f"path:{pid}": torch.tensor(v) for pid, v in fixed.items()}}
    for step in range(steps):
        optimizer.zero_grad()
        agg.backward(losses, _ctx(step))
        optimizer.step()
    return agg.weights(losses, _ctx())


def _distillers(kinds: dict[str, str]) -> SimpleNamespace:
    """A learner stand-in: attach only reads the distillers."""
    return SimpleNamespace(distillers={pid: DISTILLERS.get(kind)((10,), (10,)) for pid, kind in kinds.items()})


@pytest.mark.parametrize("a_d", [1.0, 3.0])
def test_layer_wise_weights_settle_at_the_inverse_weighted_loss(a_d: float) -> None:
    fixed, lambdas = {"a": 0.5, "b": 4.0, "c": 30.0}, {"a": 1.0, "b": 10.0, "c": 0.1}
    plain = AGGREGATORS.get("adaptive_distillation")(list(fixed), lambdas, a_d=a_d)
    weights = _train_on_fixed_losses(plain, fixed)
    assert all(float(weights[pid]) == pytest.approx(1 / value, rel=1e-4) for pid, value in fixed.items())
    scaled = AGGREGATORS.get("adaptive_distillation")(list(fixed), lambdas, a_d=a_d, use_path_weights=True)
    weights = _train_on_fixed_losses(scaled, fixed)
    assert all(float(weights[pid]) == pytest.approx(1 / (lambdas[pid] * value), rel=1e-4)
               for pid, value in fixed.items())


def test_per_loss_shares_one_s_between_paths_of_the_same_distiller() -> None:
    fixed = {"a": 0.5, "b": 1.5, "c": 4.0}
    agg = AGGREGATORS.get("adaptive_distillation")(list(fixed), {pid: 1.0 for pid in fixed}, variant="per_loss")
    agg.attach(_distillers({"a": "kd", "b": "kd", "c": "logits"}))
    assert agg.group_names == ["kd", "logits"] and agg.log_vars.shape == (2,)
    weights = _train_on_fixed_losses(agg, fixed)
    assert float(weights["a"]) == float(weights["b"]) == pytest.approx(1 / (0.5 + 1.5), rel=1e-4)
    assert float(weights["c"]) == pytest.approx(1 / 4.0, rel=1e-4)


def test_the_total_is_ce_plus_scaled_losses_plus_regulariser() -> None:
    agg = AGGREGATORS.get("adaptive_distillation")(["a", "b"], {"a": 2.0, "b": 1.0}, a_d=0.5, use_path_weights=True)
    with torch.no_grad():
        agg.log_vars.copy_(torch.tensor([0.0, 1.0]))
    total, _ = agg.combine({"task": torch.tensor(1.0), "path:a": torch.tensor(2.0), "path:b": torch.tensor(3.0)},
                           _ctx())
    e = torch.exp(torch.tensor(-1.0)).item()
    assert total.item() == pytest.approx(1.0 + 0.5 * (2.0 * 2.0 + e * 3.0) + 0.5 * (0.0 + 1.0))


def test_distiller_names_come_from_the_registry() -> None:
    assert distiller_name(DISTILLERS.get("kd")((10,), (10,))) == "kd"
    assert distiller_name(nn.Identity()) == "Identity"


@pytest.mark.parametrize("params, name", [({"variant": "stage"}, "variant"), ({"a_d": 0}, "a_d"),
                                          ({"use_path_weights": "yes"}, "use_path_weights"), ({"beta": 1}, "beta")])
def test_bad_parameters_are_named(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        AGGREGATORS.get("adaptive_distillation")(["a"], {"a": 1.0}, **params)


def test_digits_run_per_loss_logs_one_weight_per_distiller_type(home: Path) -> None:
    reporter = NullReporter()
    spec = digits_spec({"name": "adaptive_distillation", "params": {"variant": "per_loss"}})
    result = execute_run(spec, "ad", home, reporter)
    assert result["test_acc"] > 0.3
    series = {p["id"]: reporter.series(f"weight/path:{p['id']}") for p in PATHS}
    assert all(s[0] == 1.0 and len(s) >= 5 for s in series.values())
    assert series["cnn-kd"] == series["mlp-kd"]  # both kd paths share one s
    assert series["cnn-kd"][-1] != series["cnn-at"][-1] != series["mlp-rkd"][-1]
