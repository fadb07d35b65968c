"""MGDA: the min-norm point of known gradient sets, K*alpha as term weights, and digits runs in both spaces."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.optimize
import torch
from torch import nn

from engine.methods.base import PathMethod
from engine.objective import Objective
from engine.paths.base import StepContext
from engine.runner import execute_run
from engine.step import PathRoute
from engine.terms import TermInfo
from engine.train import NullReporter
from engine.weightings import WEIGHTINGS
from engine.weightings.mgda import min_norm_point
from tests.conftest import TWO_TEACHER_PATHS, two_teacher_spec

PATHS = TWO_TEACHER_PATHS


def digits_spec(weighting: dict, paths: list[dict] = PATHS):
    return two_teacher_spec(weighting, paths)


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
    return SimpleNamespace(student=student, path_spots={"a": PathRoute("t", "fc", "fc"),
                                                        "b": PathRoute("t", "fc", "fc")})


def _objective(learner: SimpleNamespace, **params) -> Objective:
    """Paths a and b under mgda, wired as a Learner wires them."""
    method = PathMethod(["a", "b"], {"a": 1.0, "b": 1.0}, {"a": "kd", "b": "kd"})
    terms = method.term_infos(learner)
    weighting = WEIGHTINGS.get("mgda")(terms, **params)
    weighting.attach(learner)
    objective = Objective(method, terms, weighting)
    objective.attach(learner)
    return objective


def _ctx() -> StepContext:
    return StepContext(labels=torch.zeros(1), epoch=0, step=0, index=torch.zeros(1))


def test_term_weights_are_k_alpha_of_the_parameter_gradients() -> None:
    learner = _linear_learner(torch.zeros(2))
    objective = _objective(learner)
    assert objective.weighting.needs_gradients
    theta = learner.student.theta
    losses = {"task": theta.sum() * 0, "path:a": theta @ torch.tensor([2.0, 0.0]),
              "path:b": theta @ torch.tensor([0.0, 1.0])}  # gradients (2, 0) and (0, 1): alpha (0.2, 0.8)
    result = objective.backward(losses, _ctx())
    assert [float(result.weights["path:a"]), float(result.weights["path:b"])] == pytest.approx([0.4, 1.6])
    assert theta.grad.tolist() == pytest.approx([0.4 * 2.0, 1.6 * 1.0])  # CE + sum K alpha_k L_k


def test_logits_space_takes_the_gradients_on_the_logits_itself() -> None:
    learner = _linear_learner(torch.zeros(2))
    objective = _objective(learner, space="logits")
    assert not objective.weighting.needs_gradients
    theta = learner.student.theta
    logits = theta * torch.tensor([1.0, 1.0])
    ctx = _ctx()
    ctx.student_taps = {"fc": logits}
    losses = {"task": theta.sum() * 0, "path:a": logits @ torch.tensor([2.0, 0.0]),
              "path:b": logits @ torch.tensor([0.0, 1.0])}
    result = objective.backward(losses, ctx)
    assert [float(result.weights["path:a"]), float(result.weights["path:b"])] == pytest.approx([0.4, 1.6])


def test_logits_space_needs_every_term_at_fc() -> None:
    learner = _linear_learner(torch.zeros(2))
    learner.path_spots["b"] = PathRoute("t", "conv2", "conv2")
    with pytest.raises(ValueError, match="space 'logits'.*: path:b"):
        _objective(learner, space="logits")
    fused = WEIGHTINGS.get("mgda")([TermInfo("amtml/fused_kd", 1.0)], space="logits")
    with pytest.raises(ValueError, match="space 'logits'.*: amtml/fused_kd"):
        fused.attach(_linear_learner(torch.zeros(2)))


@pytest.mark.parametrize("params, name", [({"space": "features"}, "space"), ({"iterations": 0}, "iterations"),
                                          ({"normalize": "l2"}, "normalize")])
def test_bad_parameters_are_named(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        WEIGHTINGS.get("mgda")([TermInfo("path:a", 1.0, path="a")], **params)


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
    assert cosines and cosines[0].columns == [f"path:{p['id']}" for p in paths]
    assert cosines[0].values.shape == (len(paths), len(paths)) and (cosines[0].index == -1).all()
    assert np.allclose(np.diag(cosines[0].values), 1.0, atol=1e-4)
