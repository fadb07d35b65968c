"""Loss-magnitude balancing: each weighted term's value equals the task loss's while its gradient keeps its own
direction, the parameters scale it, a term at 0 gets a bounded weight, and a three-teacher digits run logs
every path at the task loss's value."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from engine.paths.base import StepContext
from engine.runner import execute_run
from engine.spec import parse_spec
from engine.terms import TermInfo
from engine.train import NullReporter
from engine.weightings import WEIGHTINGS
from tests.test_method_multi_teacher import THREE_TEACHER_PATHS, three_teacher_spec

TERMS = [TermInfo("path:a", 2.0, path="a", kind="kd"), TermInfo("path:b", 0.5, path="b", kind="at")]
#: student logits (B=2, C=3) and labels: the task CE is their mean cross-entropy
LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
LABELS = torch.tensor([0, 2])


def task_ce() -> float:
    rows = [(LOGITS[b].tolist(), int(LABELS[b])) for b in range(2)]
    return sum(math.log(sum(math.exp(v) for v in row)) - row[label] for row, label in rows) / 2


def ctx() -> StepContext:
    return StepContext(labels=LABELS, epoch=0, step=0, index=torch.arange(2), student_taps={"fc": LOGITS})


def test_each_weighted_term_equals_the_task_loss_and_its_gradient_keeps_its_own_direction() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    terms = [(x**2).sum() * 1e-3, (x - 1.0).abs().sum() * 50.0]  # very different scales
    weights = WEIGHTINGS.get("loss_balance")(TERMS).weigh(torch.stack(terms), ctx(), None)
    assert not weights.requires_grad  # stop-gradient ratios
    for weight, term in zip(weights, terms):
        assert float(weight * term.detach()) == pytest.approx(task_ce(), rel=1e-6)
        own = torch.autograd.grad(term, x, retain_graph=True)[0]
        weighted = torch.autograd.grad(weight * term, x, retain_graph=True)[0]
        assert torch.allclose(weighted, float(weight) * own)  # same direction, rescaled by a positive constant
        assert float(torch.cosine_similarity(weighted, own, dim=0)) == pytest.approx(1.0)


def test_ratio_and_path_weights_scale_the_balanced_value() -> None:
    values = torch.tensor([4.0, 0.01])
    weights = WEIGHTINGS.get("loss_balance")(TERMS, ratio=0.5, use_path_weights=True).weigh(values, ctx(), None)
    assert (weights * values).tolist() == pytest.approx([0.5 * 2.0 * task_ce(), 0.5 * 0.5 * task_ce()], rel=1e-6)


def test_a_term_at_zero_gets_the_bounded_weight_of_min_loss() -> None:
    weights = WEIGHTINGS.get("loss_balance")(TERMS, min_loss=1e-3).weigh(torch.tensor([0.0, 1.0]), ctx(), None)
    assert weights.tolist() == pytest.approx([task_ce() / 1e-3, task_ce()], rel=1e-6)


def test_without_the_students_logits_the_error_names_the_missing_spot() -> None:
    bare = StepContext(labels=LABELS, epoch=0, step=0, index=torch.arange(2), student_taps={"pool": LOGITS})
    with pytest.raises(ValueError, match="no 'fc' spot .*pool"):
        WEIGHTINGS.get("loss_balance")(TERMS).weigh(torch.tensor([1.0, 1.0]), bare, None)


def test_a_three_teacher_digits_run_logs_every_path_at_the_task_losss_value(home: Path) -> None:
    reporter = NullReporter()
    spec = parse_spec(three_teacher_spec(None, {"name": "loss_balance"}))
    result = execute_run(spec, "run-loss-balance", home, reporter)
    assert 0.0 <= result["test_acc"] <= 1.0
    steps: dict[int, dict[str, float]] = {}
    for phase, step, _epoch, key, value in reporter.rows:
        if phase == "main" and key.startswith(("loss/", "weight/")):
            steps.setdefault(step, {})[key] = value
    steps = {step: values for step, values in steps.items() if "loss/total" in values}  # the training steps logged
    assert len(steps) >= 3
    for values in steps.values():
        for pid in (p["id"] for p in THREE_TEACHER_PATHS):
            weighted = values[f"weight/path:{pid}"] * values[f"loss/path:{pid}"]
            assert weighted == pytest.approx(values["loss/task"], rel=1e-4), pid
