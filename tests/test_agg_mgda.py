"""MGDA: the min-norm point of known gradient sets, K*alpha as path weights, and digits runs in both spaces."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.optimize
import torch
from torch import nn

from engine.aggregators import AGGREGATORS
from engine.aggregators.mgda import min_norm_point
from engine.paths.base import StepContext
from engine.runner import execute_run
from engine.train import NullReporter
from tests.conftest import two_teacher_spec

PATHS = [{"id": "cnn-kd", "teacher": "cnn", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
         {"id": "cnn-at", "teacher": "cnn", "distiller": "at", "teacher_spot": "conv2", "student_spot": "conv2"},
         {"id": "mlp-kd", "teacher": "mlp", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
         {"id": "mlp-rkd", "teacher": "mlp", "distiller": "rkd", "teacher_spot": "pool", "student_spot": "pool"}]


def digits_spec(aggregator: dict, paths: list[dict] = PATHS):
    return two_teacher_spec(aggregator, paths)


def _alpha(vectors: list[list[float]], iterations: int = 50) -> list[float]:
    v = torch.tensor(vectors, dtype=torch.float64)
    return min_norm_point(v @ v.T, iterations).tolist()


@pytest.mark.parametrize("vectors, expected", [
    ([[1.0, 0.0], [0.0, 1.0]], [0.5, 0.5]),  # orthogonal, equal length
    ([[2.0, 0.0], [0.0, 1.0]], [0.2, 0.8]),  # argmin of 4a^2 + (1 - a)^2
    ([[1.0, 0.0], [2.0, 0.0]], [1.0, 0.0]),  # the shorter vector is the hull's closest point
    ([[1.0, 0.0], [1.0, 0.0]], [1.0, 0.0]),  # identical: any alpha, the solver keeps the first
    ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], [1 / 3] * 3),  # orthonormal: uniform
    ([[1.0, 0.0], [0.0, 1.0], [0.1, 0.1]], [0.0, 0.0, 1.0]),  # one vector inside the hull is the answer
    ([[1.0, 1.0], [-1.0, 1.0], [0.0, 3.0]], [0.5, 0.5, 0.0]),  # the min-norm point (0, 1) lies on an edge
    ([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], None),  # all zero: any point of the simplex
])
def test_min_norm_point_of_known_cases(vectors: list[list[float]], expected: list[float] | None) -> None:
    alpha = _alpha(vectors)
    assert min(alpha) >= 0 and sum(alpha) == pytest.approx(1.0)
    if expected is not None:
        assert alpha == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("k, dim", [(4, 3), (6, 4), (8, 50)])
def test_frank_wolfe_matches_a_general_solver(k: int, dim: int) -> None:
    v = torch.randn(k, dim, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    gram = (v @ v.T).numpy()
    reference = scipy.optimize.minimize(
        lambda a: a @ gram @ a, np.full(k, 1 / k), jac=lambda a: 2 * gram @ a, method="SLSQP",
        bounds=[(0, 1)] * k, constraints=[{"type": "eq", "fun": lambda a: a.sum() - 1}],
        options={"ftol": 1e-15, "maxiter": 1000}).fun
    for iterations, rel in ((50, 1e-3), (2000, 1e-9)):
        alpha = np.array(_alpha(v.tolist(), iterations))
        assert alpha.min() >= 0 and alpha.sum() == pytest.approx(1.0)
        assert alpha @ gram @ alpha == pytest.approx(reference, rel=rel)


def _linear_learner(theta: torch.Tensor) -> SimpleNamespace:
    """A learner stand-in whose student is one shared parameter vector and whose paths read fc."""
    student = nn.Module()
    student.theta = nn.Parameter(theta)
    return SimpleNamespace(student=student, path_spots={"a": ("t", "fc", "fc"), "b": ("t", "fc", "fc")})


def test_path_weights_are_k_alpha_of_the_parameter_gradients() -> None:
    learner = _linear_learner(torch.zeros(2))
    agg = AGGREGATORS.get("mgda")(["a", "b"], {"a": 1.0, "b": 1.0})
    agg.attach(learner)
    theta = learner.student.theta
    losses = {"task": theta.sum() * 0, "path:a": theta @ torch.tensor([2.0, 0.0]),
              "path:b": theta @ torch.tensor([0.0, 1.0])}  # gradients (2, 0) and (0, 1): alpha (0.2, 0.8)
    total, weights = agg.backward(losses, StepContext(labels=torch.zeros(1), epoch=0, step=0, index=torch.zeros(1)))
    assert [float(weights["a"]), float(weights["b"])] == pytest.approx([0.4, 1.6])
    assert theta.grad.tolist() == pytest.approx([0.4 * 2.0, 1.6 * 1.0])  # CE + sum K alpha_k L_k


def test_logits_space_needs_every_path_at_fc() -> None:
    learner = _linear_learner(torch.zeros(2))
    learner.path_spots["b"] = ("t", "conv2", "conv2")
    agg = AGGREGATORS.get("mgda")(["a", "b"], {"a": 1.0, "b": 1.0}, space="logits")
    with pytest.raises(ValueError, match="space 'logits'.*: b"):
        agg.attach(learner)


@pytest.mark.parametrize("params, name", [({"space": "features"}, "space"), ({"iterations": 0}, "iterations"),
                                          ({"normalize": "l2"}, "normalize")])
def test_bad_parameters_are_named(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        AGGREGATORS.get("mgda")(["a"], {"a": 1.0}, **params)


@pytest.mark.parametrize("space, paths", [
    ("params", PATHS),
    ("logits", [p for p in PATHS if p["student_spot"] == "fc"]
     + [{"id": "mlp-logits", "teacher": "mlp", "distiller": "logits", "teacher_spot": "fc", "student_spot": "fc"}]),
])
def test_digits_run_logs_weights_summing_to_k(home: Path, space: str, paths: list[dict]) -> None:
    reporter = NullReporter()
    result = execute_run(digits_spec({"name": "mgda", "params": {"space": space}}, paths), space, home, reporter)
    assert result["test_acc"] > 0.3
    series = [reporter.series(f"weight/path:{p['id']}") for p in paths]
    assert len(series[0]) >= 5
    for step_weights in zip(*series):
        assert min(step_weights) >= 0 and sum(step_weights) == pytest.approx(len(paths), rel=1e-5)
    assert any(max(w) - min(w) > 0.1 for w in zip(*series))  # MGDA does move away from equal weights
    cosines = [a[4] for a in reporter.arrays if a[0] == "main" and a[3] == "mgda/grad_cosine"]
    assert cosines and cosines[0].columns == [p["id"] for p in paths]
    assert cosines[0].values.shape == (len(paths), len(paths)) and (cosines[0].index == -1).all()
    assert np.allclose(np.diag(cosines[0].values), 1.0, atol=1e-4)
