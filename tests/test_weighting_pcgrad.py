"""PCGrad: conflicting term gradients lose their conflicting part; the student gets CE + sum of projections."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from engine.methods.base import PathMethod
from engine.objective import Objective
from engine.paths.base import StepContext
from engine.runner import execute_run
from engine.train import NullReporter
from engine.weightings import WEIGHTINGS
from engine.weightings.pcgrad import project_conflicting
from tests.conftest import two_teacher_spec

PATHS = [{"id": "cnn-kd", "teacher": "cnn", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
         {"id": "cnn-at", "teacher": "cnn", "distiller": "at", "teacher_spot": "conv2", "student_spot": "conv2",
          "weight": 100.0},
         {"id": "cnn-fitnet", "teacher": "cnn", "distiller": "fitnet", "teacher_spot": "conv1", "student_spot": "conv1",
          "weight": 1.0},
         {"id": "mlp-kd", "teacher": "mlp", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
         {"id": "mlp-rkd", "teacher": "mlp", "distiller": "rkd", "teacher_spot": "pool", "student_spot": "pool"}]


def digits_spec(weighting: dict, epochs: int = 2):
    return two_teacher_spec(weighting, PATHS, epochs)


def _project(rows: list[list[float]], seed: int = 0) -> torch.Tensor:
    return project_conflicting(torch.tensor(rows, dtype=torch.float64), torch.Generator().manual_seed(seed))


def test_a_conflicting_pair_becomes_orthogonal() -> None:
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    projected = _project(g.tolist())
    assert projected[0] @ g[1] == pytest.approx(0.0, abs=1e-12)  # g_1' . g_2 == 0
    assert projected[1] @ g[0] == pytest.approx(0.0, abs=1e-12)
    assert torch.allclose(projected, torch.tensor([[0.5, 0.5], [0.0, 1.0]], dtype=torch.float64))


def test_non_conflicting_gradients_pass_unchanged() -> None:
    rows = [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 2.0]]  # every dot product >= 0
    assert torch.equal(_project(rows), torch.tensor(rows, dtype=torch.float64))
    rows[2] = [0.0, -1.0, 2.0]  # now conflicts with the second row only
    projected = _project(rows)
    assert torch.equal(projected[0], torch.tensor(rows[0], dtype=torch.float64))
    assert projected[2] @ torch.tensor(rows[1], dtype=torch.float64) == pytest.approx(0.0, abs=1e-12)


def test_order_is_drawn_from_the_seed() -> None:
    rows = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64).tolist()
    assert torch.equal(_project(rows, seed=3), _project(rows, seed=3))
    assert any(not torch.allclose(_project(rows, seed=0), _project(rows, seed=s)) for s in range(1, 10))


def test_backward_writes_ce_plus_projected_terms_and_plain_adapter_grads() -> None:
    student = nn.Module()
    student.theta = nn.Parameter(torch.tensor([0.5, -1.0]))
    adapter = nn.Module()
    adapter.scale = nn.Parameter(torch.tensor(1.5))
    learner = SimpleNamespace(student=student, distillers={"a": adapter, "b": nn.Module()})
    method = PathMethod(["a", "b"], {"a": 2.0, "b": 1.0}, {"a": "fitnet", "b": "kd"})
    terms = method.term_infos(learner)
    weighting = WEIGHTINGS.get("pcgrad")(terms)
    weighting.attach(learner)
    objective = Objective(method, terms, weighting)
    objective.attach(learner)
    theta, ua, ub = student.theta, torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    losses = {"task": theta @ torch.tensor([0.25, 0.25]), "path:a": adapter.scale * (theta @ ua), "path:b": theta @ ub}
    result = objective.backward(losses, StepContext(labels=torch.zeros(1), epoch=0, step=7, index=torch.zeros(1)))
    ga, gb = 2.0 * 1.5 * ua, ub  # term gradients (weighted by the base weights) on theta: (3, 0) and (-1, 1)
    pa, pb = ga - (ga @ gb) / (gb @ gb) * gb, gb - (gb @ ga) / (ga @ ga) * ga
    assert theta.grad.tolist() == pytest.approx((torch.tensor([0.25, 0.25]) + pa + pb).tolist())
    assert adapter.scale.grad.item() == pytest.approx(2.0 * (theta @ ua).item())  # its term's plain gradient
    assert {name: float(w) for name, w in result.weights.items()} == {"task": 1.0, "path:a": 2.0, "path:b": 1.0}
    assert result.total.item() == pytest.approx((losses["task"] + 2.0 * losses["path:a"] + losses["path:b"]).item())


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(ValueError, match="seed"):
        WEIGHTINGS.get("pcgrad")(PathMethod(["a"], {"a": 1.0}, {}).term_infos(None), seed=1)


def test_digits_run_trains_and_logs_the_path_weights(home: Path) -> None:
    reporter = NullReporter()
    result = execute_run(digits_spec({"name": "pcgrad"}), "pc", home, reporter)
    assert result["test_acc"] > 0.3
    expected = {"cnn-kd": 1.0, "cnn-at": 100.0, "cnn-fitnet": 1.0, "mlp-kd": 1.0, "mlp-rkd": 1.0}
    for pid, weight in expected.items():
        assert set(reporter.series(f"weight/path:{pid}")) == {weight}
    assert all(torch.isfinite(torch.tensor(reporter.series(f"loss/path:{pid}"))).all() for pid in expected)
    total = reporter.series("loss/total")
    assert total[-1] < total[0]
    cosines = [a[4] for a in reporter.arrays if a[0] == "main" and a[3] == "pcgrad/grad_cosine"]
    assert cosines and cosines[0].columns == [f"path:{pid}" for pid in expected] and cosines[0].values.shape == (5, 5)
    assert (cosines[0].index == -1).all() and abs(cosines[0].values.diagonal() - 1).max() < 1e-4
