"""DWA: weights are K softmax of epoch-mean loss ratios over T, 1 for two epochs, and survive checkpoints."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from engine.aggregators import AGGREGATORS
from engine.paths.base import StepContext
from engine.runner import execute_run
from engine.store import run_dir
from engine.train import NullReporter
from tests.conftest import two_teacher_spec

PATHS = [{"id": "cnn-kd", "teacher": "cnn", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
         {"id": "cnn-at", "teacher": "cnn", "distiller": "at", "teacher_spot": "conv2", "student_spot": "conv2"},
         {"id": "mlp-kd", "teacher": "mlp", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
         {"id": "mlp-rkd", "teacher": "mlp", "distiller": "rkd", "teacher_spot": "pool", "student_spot": "pool"}]
IDS = ["a", "b", "c"]


def digits_spec(aggregator: dict, epochs: int = 2):
    return two_teacher_spec(aggregator, PATHS, epochs)


def dwa_formula(last: list[float], before: list[float], temperature: float) -> list[float]:
    """The paper's weights, computed without torch."""
    exps = [math.exp(l / b / temperature) for l, b in zip(last, before)]
    return [len(exps) * e / sum(exps) for e in exps]


def _feed_epoch(agg, epoch: int, batches: list[list[float]]) -> list[dict[str, float]]:
    """Backward on batches of given path losses, then end the epoch; returns the weights used."""
    used = []
    for step, values in enumerate(batches):
        losses = {"task": torch.tensor(0.1, requires_grad=True),
                  **{f"path:{pid}": torch.tensor(v, requires_grad=True) for pid, v in zip(IDS, values)}}
        _, weights = agg.backward(losses, StepContext(labels=torch.zeros(1), epoch=epoch, step=step,
                                                      index=torch.zeros(1)))
        used.append({pid: float(w) for pid, w in weights.items()})
    agg.on_epoch_end(epoch)
    return used


@pytest.mark.parametrize("temperature", [2.0, 0.5])
def test_weights_follow_the_formula_on_known_epoch_means(temperature: float) -> None:
    agg = AGGREGATORS.get("dwa")(IDS, {pid: 1.0 for pid in IDS}, temperature=temperature)
    epochs = [[[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]],  # means 2, 2, 2
              [[1.0, 1.5, 3.0]],
              [[0.5, 1.5, 1.5], [0.5, 1.5, 1.5]],
              [[0.1, 0.1, 0.1]]]
    used = [_feed_epoch(agg, e, batches) for e, batches in enumerate(epochs)]
    assert all(w == {pid: 1.0 for pid in IDS} for epoch in used[:2] for w in epoch)
    for got, expected in ((used[2], dwa_formula([1.0, 1.5, 3.0], [2.0, 2.0, 2.0], temperature)),
                          (used[3], dwa_formula([0.5, 1.5, 1.5], [1.0, 1.5, 3.0], temperature))):
        for weights in got:
            assert [weights[pid] for pid in IDS] == pytest.approx(expected, rel=1e-6)
            assert sum(weights.values()) == pytest.approx(len(IDS))


def test_history_is_carried_by_the_state_dict() -> None:
    agg = AGGREGATORS.get("dwa")(IDS, {pid: 1.0 for pid in IDS})
    for epoch, values in enumerate([[1.0, 2.0, 3.0], [2.0, 1.0, 3.0]]):
        _feed_epoch(agg, epoch, [values])
    restored = AGGREGATORS.get("dwa")(IDS, {pid: 1.0 for pid in IDS})
    restored.load_state_dict(agg.state_dict())
    weights = [float(w) for w in restored.weights({"task": torch.tensor(0.0)}, None).values()]
    assert weights == pytest.approx(dwa_formula([2.0, 1.0, 3.0], [1.0, 2.0, 3.0], 2.0))


@pytest.mark.parametrize("params, name", [({"temperature": 0}, "temperature"), ({"T": 2}, "T")])
def test_bad_parameters_are_named(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        AGGREGATORS.get("dwa")(IDS, {pid: 1.0 for pid in IDS}, **params)


def test_digits_run_weights_the_third_epoch_by_the_first_two(home: Path) -> None:
    reporter = NullReporter()
    result = execute_run(digits_spec({"name": "dwa"}, epochs=3), "dwa", home, reporter)
    assert result["test_acc"] > 0.3
    logged = {p["id"]: {r[2]: r[4] for r in reporter.rows if r[0] == "main" and r[3] == f"weight/path:{p['id']}"}
              for p in PATHS}
    assert all(w[0] == 1.0 and w[1] == 1.0 for w in logged.values())
    state = torch.load(run_dir(home, "dwa") / "checkpoints" / "epoch_001.pt", weights_only=True)["aggregator"]
    before, last = state["epoch_means"].tolist()
    expected = dwa_formula(last, before, 2.0)
    assert [logged[p["id"]][2] for p in PATHS] == pytest.approx(expected, rel=1e-5)
    assert sum(expected) == pytest.approx(len(PATHS)) and max(expected) - min(expected) > 1e-3
