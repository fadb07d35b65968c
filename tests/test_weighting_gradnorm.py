"""GradNorm: term gradient norms at the last shared layer are pulled together; sum w = K; exact resume."""
from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.methods.base import PathMethod
from engine.objective import Objective
from engine.paths.base import StepContext
from engine.runner import execute_run
from engine.store import run_dir
from engine.train import NullReporter
from engine.weightings import WEIGHTINGS
from engine.weightings.gradnorm import last_shared_parameter
from tests.conftest import TWO_TEACHER_PATHS, two_teacher_spec

PATHS = TWO_TEACHER_PATHS


def digits_spec(weighting: dict, epochs: int = 2):
    return two_teacher_spec(weighting, PATHS, epochs)


class TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 8)
        self.head_a = nn.Linear(8, 1)
        self.head_b = nn.Linear(8, 1)

    def losses(self, x: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.shared(x))
        return {"task": h.sum() * 0, "path:a": F.mse_loss(self.head_a(h).squeeze(1), ya),
                "path:b": F.mse_loss(self.head_b(h).squeeze(1), yb)}


def _gradnorm(model: nn.Module, **params) -> tuple[Objective, object]:
    """The objective of paths a and b on `model` under gradnorm, as a Learner would build it."""
    method = PathMethod(["a", "b"], {"a": 1.0, "b": 1.0}, {"a": "kd", "b": "kd"})
    terms = method.term_infos(None)
    weighting = WEIGHTINGS.get("gradnorm")(terms, **params)
    learner = SimpleNamespace(student=model)
    weighting.attach(learner)
    objective = Objective(method, terms, weighting)
    objective.attach(learner)
    return objective, weighting


def _toy(steps: int, **params) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, object, TwoHeads]:
    """Train the two-head toy (loss b starts about 70x loss a).

    Returns G (steps, 2), the losses (steps, 2) and sum w (steps,) of every step, the weighting and the model.
    """
    torch.manual_seed(0)
    model = TwoHeads()
    objective, weighting = _gradnorm(model, **params)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, u = torch.randn(64, 4), torch.randn(4, 2)
    ya, yb = x @ u[:, 0], 10 * (x @ u[:, 1])
    norms, losses, sums = [], [], []
    for step in range(steps):
        optimizer.zero_grad()
        step_losses = model.losses(x, ya, yb)
        objective.backward(step_losses, StepContext(labels=ya, epoch=0, step=step, index=torch.arange(64)))
        optimizer.step()
        norms.append(weighting.part.last_grad_norms)
        losses.append(torch.stack([step_losses["path:a"], step_losses["path:b"]]).detach())
        sums.append(weighting.part.weight.detach().sum())
    return torch.stack(norms), torch.stack(losses), torch.stack(sums), weighting, model


def test_without_rate_balancing_the_gradient_norms_become_equal() -> None:
    norms, losses, sums, weighting, model = _toy(300, alpha=0.0)
    assert weighting.part.shared_layer[0] is model.shared.bias  # the last parameter both heads depend on
    spread = norms.max(1).values / norms.min(1).values
    assert losses[0, 1] / losses[0, 0] > 50 and spread[0] > 5
    assert spread[-50:].max() < 1.2
    assert torch.allclose(sums, torch.tensor(2.0))
    weight = weighting.part.weight
    assert weight.min() > 0 and weight[0] > weight[1]  # the small loss is weighted up


def test_gradient_norms_follow_the_relative_training_rates() -> None:
    """G_k -> mean G * r_k^alpha: the term that trains more slowly gets the larger gradient."""
    norms, losses, sums, _, _ = _toy(300)
    ratio = losses / losses[0]
    target = (ratio / ratio.mean(1, keepdim=True)) ** 1.5
    off_target = (norms / norms.mean(1, keepdim=True) / target).log().abs().max(1).values
    assert off_target[0] > 1.0 and off_target[-50:].max() < 0.2
    assert torch.allclose(sums, torch.tensor(2.0))


def test_a_step_uses_the_weights_from_before_its_update() -> None:
    torch.manual_seed(0)
    model = TwoHeads()
    objective, weighting = _gradnorm(model)
    x = torch.randn(8, 4)
    before = weighting.part.weight.detach().clone()
    result = objective.backward(model.losses(x, torch.zeros(8), torch.ones(8)),
                                StepContext(labels=torch.zeros(8), epoch=0, step=0, index=torch.arange(8)))
    assert [float(result.weights[n]) for n in ("path:a", "path:b")] == before.tolist()
    assert not torch.equal(weighting.part.weight.detach(), before)


def test_last_shared_parameter_is_found_by_autograd() -> None:
    model = TwoHeads()
    losses = model.losses(torch.randn(3, 4), torch.zeros(3), torch.zeros(3))
    params = list(model.parameters())
    assert last_shared_parameter([losses["path:a"], losses["path:b"]], params) is model.shared.bias
    assert last_shared_parameter([losses["path:a"]], params) is model.head_a.bias
    with pytest.raises(ValueError, match="share no"):
        last_shared_parameter([losses["path:a"], losses["path:b"]], [model.head_a.weight, model.head_b.weight])


def test_weights_and_their_optimizer_survive_a_weights_only_checkpoint() -> None:
    *_, weighting, _ = _toy(5)
    buffer = io.BytesIO()
    torch.save(weighting.state_dict(), buffer)
    buffer.seek(0)
    restored = _gradnorm(TwoHeads())[1]
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    part, loaded_part = weighting.part, restored.part
    assert torch.equal(loaded_part.weight, part.weight) and torch.equal(loaded_part.initial_losses,
                                                                         part.initial_losses)
    assert bool(loaded_part.has_initial)
    saved, loaded = part.optimizer.state_dict()["state"][0], loaded_part.optimizer.state_dict()["state"][0]
    assert all(torch.equal(saved[key], loaded[key]) for key in ("exp_avg", "exp_avg_sq", "step"))
    # every parameter is the own learner's: none trains with the student's optimizer
    assert restored.learners() == [loaded_part] and loaded_part.name == "gradnorm/weights"
    assert {id(p) for p in restored.parameters()} == {id(p) for p in loaded_part.parameters()}


@pytest.mark.parametrize("params, name", [({"alpha": -1}, "alpha"), ({"lr": 0}, "lr"), ({"beta": 1}, "beta")])
def test_bad_parameters_are_named(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        WEIGHTINGS.get("gradnorm")(PathMethod(["a"], {"a": 1.0}, {}).term_infos(None), **params)


def test_digits_run_keeps_sum_w_at_k_and_resumes_exactly(home: Path) -> None:
    reporter = NullReporter()
    result = execute_run(digits_spec({"name": "gradnorm"}), "straight", home, reporter)
    assert result["test_acc"] > 0.3
    series = [reporter.series(f"weight/path:{p['id']}") for p in PATHS]
    assert all(w == 1.0 for w in next(zip(*series)))
    assert all(sum(ws) == pytest.approx(len(PATHS), rel=1e-5) for ws in zip(*series))
    assert max(abs(w - 1.0) for w in (s[-1] for s in series)) > 0.05
    norms = [a[4] for a in reporter.arrays if a[0] == "main" and a[3] == "gradnorm/grad_norms"]
    assert norms and norms[0].values.shape == (1, len(PATHS))
    assert norms[0].columns == [f"path:{p['id']}" for p in PATHS]
    assert (norms[0].values > 0).all() and norms[0].index.tolist() == [-1]
    execute_run(digits_spec({"name": "gradnorm"}, epochs=1), "resumed", home, NullReporter())
    execute_run(digits_spec({"name": "gradnorm"}), "resumed", home, NullReporter())  # continues from epoch 1
    final = {run: torch.load(run_dir(home, run) / "checkpoints" / "last.pt", weights_only=True)
             for run in ("straight", "resumed")}
    for part in ("model", "weighting"):
        assert all(torch.equal(final["straight"][part][k], final["resumed"][part][k])
                   for k in final["straight"][part] if not k.endswith("_extra_state"))
