"""The effect measure of the negative-transfer probe: the optimizer's step rule, effects on constructed cases,
a probe that leaves the step untouched, and verdict history that survives a resume."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.diagnostics.effect import measure_effects, term_shares
from engine.diagnostics.step_rule import StepRule
from engine.runner import execute_run, run_dir
from engine.spec import parse_spec
from engine.train import NullReporter
from tests.conftest import tiny_spec_dict

OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "sgd_nesterov": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd_plain": lambda params: torch.optim.SGD(params, lr=0.1),
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2, weight_decay=1e-3),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2),
}


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("steps_before", [0, 3])
def test_the_step_rule_is_what_the_optimizer_does(name: str, steps_before: int) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 3))
    params = list(model.parameters())
    optimizer = OPTIMIZERS[name](params)
    for _ in range(steps_before):  # momentum buffers and Adam moments
        for p in params:
            p.grad = torch.randn_like(p)
        optimizer.step()
    gradient = torch.randn(sum(p.numel() for p in params))
    predicted = StepRule(optimizer, params).update(gradient)
    before = _flat(p.detach().clone() for p in params)
    offset = 0
    for p in params:
        p.grad = gradient[offset:offset + p.numel()].view_as(p).clone()
        offset += p.numel()
    optimizer.step()
    torch.testing.assert_close(predicted, _flat(p.detach() for p in params) - before, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- constructed cases
def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=generator)
    centres = torch.tensor([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    return centres[y] + 1.2 * torch.randn(n, 2, generator=generator), y  # overlapping: a finite best scale


def _effects(path_loss_of, lr: float = 1e-3) -> dict:
    """Effects of the task's share and of a path's (built from the model's logits on the training batch), on a
    linear classifier that has learnt the task partly (25 steps)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 3)
    params = list(model.parameters())
    (x, y), (x_val, y_val) = _blobs(256, seed=1), _blobs(512, seed=2)
    warm_up = torch.optim.SGD(params, lr=0.1)
    for _ in range(25):
        warm_up.zero_grad()
        F.cross_entropy(model(x), y).backward()
        warm_up.step()
    optimizer = torch.optim.SGD(params, lr=lr)
    logits = model(x)
    losses = {"task": F.cross_entropy(logits, y), "path": path_loss_of(logits, y)}
    grads = {name: _flat(torch.autograd.grad(loss, params, retain_graph=True)) for name, loss in losses.items()}
    shares = term_shares(StepRule(optimizer, params), grads, {"task": 1.0, "path": 1.0})
    return measure_effects(model, params, shares, ["task", "path"], x_val, y_val, chunks=4)


def test_a_path_whose_loss_is_the_task_loss_helps_as_much_as_the_task() -> None:
    effects = _effects(lambda logits, y: F.cross_entropy(logits, y))
    assert effects["path"].mean < 0 and effects["path"].mean < -10 * effects["path"].se
    assert effects["path"].mean == pytest.approx(effects["task"].mean, rel=1e-3)


def test_a_path_pulling_toward_wrong_labels_hurts() -> None:
    effects = _effects(lambda logits, y: F.cross_entropy(logits, (y + 1) % 3))
    assert effects["path"].mean > 0 and effects["path"].mean > 4 * effects["path"].se
    assert effects["task"].mean < 0


def test_a_path_scaled_ten_times_reports_ten_times_the_effect() -> None:
    once = _effects(lambda logits, y: F.cross_entropy(logits, (y + 1) % 3))["path"].mean
    ten = _effects(lambda logits, y: 10 * F.cross_entropy(logits, (y + 1) % 3))["path"].mean
    assert ten / once == pytest.approx(10, rel=0.05)


def test_an_overshooting_push_in_the_task_direction_is_seen() -> None:
    """Magnitude beyond first order: the task's own direction, pushed 10,000x, overshoots and raises validation
    loss, where a first-order estimate (proportional to the push) would call it 10,000x as helpful."""
    gentle = _effects(lambda logits, y: F.cross_entropy(logits, y), lr=0.01)["path"].mean
    violent = _effects(lambda logits, y: 10_000 * F.cross_entropy(logits, y), lr=0.01)["path"].mean
    assert gentle < 0 < violent


# ---------------------------------------------------------------- in a real run
def _spec(**overrides) -> dict:
    """A small CNN student (batch norm) and two paths, with the probe every 3 steps."""
    return tiny_spec_dict(**{
        "student": {"arch": "small_cnn", "arch_params": {"width": 8}},
        "teachers": [{"id": "t", "arch": "small_cnn", "arch_params": {"width": 8},
                      "source": {"kind": "train", "epochs": 2}}],
        "paths": [{"id": "t-kd", "teacher": "t", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
                  {"id": "t-at", "teacher": "t", "distiller": "at", "teacher_spot": "conv2", "student_spot": "conv2"}],
        "diagnostics": {"enabled": True, "every": 3}, **overrides})


def _final_state(home: Path, run_id: str) -> dict[str, torch.Tensor]:
    return torch.load(run_dir(home, run_id) / "checkpoints" / "final.pt", weights_only=True)["state_dict"]


def test_a_probed_run_trains_exactly_like_an_unprobed_one(home: Path) -> None:
    """Weights, optimizer state, batch-norm statistics and random streams: the probe changes none of them."""
    probed = execute_run(parse_spec(_spec()), "probed", home, NullReporter())
    plain = execute_run(parse_spec(_spec(diagnostics={"enabled": False})), "plain", home, NullReporter())
    assert probed["verdict_details"] and "verdict_details" not in plain
    a, b = _final_state(home, "probed"), _final_state(home, "plain")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # running_mean/var included
    assert probed["test_acc"] == plain["test_acc"]


def test_resume_after_a_kill_keeps_the_verdict_history(home: Path) -> None:
    straight = execute_run(parse_spec(_spec(epochs=3)), "straight", home, NullReporter())
    execute_run(parse_spec(_spec(epochs=2)), "resumed", home, NullReporter())  # killed after its second epoch
    (run_dir(home, "resumed") / "checkpoints" / "final.pt").unlink()
    resumed = execute_run(parse_spec(_spec(epochs=3)), "resumed", home, NullReporter())
    for pid, details in straight["verdict_details"].items():
        again = resumed["verdict_details"][pid]
        assert again["history"] == details["history"] and again["probes"] == details["probes"]
        assert again["mean_effect"] == pytest.approx(details["mean_effect"], rel=1e-6, abs=1e-12)
