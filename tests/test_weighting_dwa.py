"""DWA: weights are K softmax of epoch-mean loss ratios over T, 1 for two epochs, and survive checkpoints."""
from __future__ import annotations

import math
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
IDS = ["a", "b", "c"]
TERMS = [TermInfo(f"path:{pid}", 1.0, path=pid, kind="kd") for pid in IDS]


def digits_spec(weighting: dict, epochs: int = 2):
    return two_teacher_spec(weighting, PATHS, epochs)


def dwa_formula(last: list[float], before: list[float], temperature: float) -> list[float]:
    """The paper's weights, computed without torch."""
    exps = [math.exp(l / b / temperature) for l, b in zip(last, before)]
    return [len(exps) * e / sum(exps) for e in exps]


def _feed_epoch(weighting, epoch: int, batches: list[list[float]]) -> list[list[float]]:
    """Weigh and observe batches of given term values, as the loop does, then end the epoch; returns the weights."""
    used = []
    for step, values in enumerate(batches):
        values = torch.tensor(values)
        used.append(weighting.weigh(values, step_ctx(step), None).tolist())
        weighting.observe(values)
    weighting.on_epoch_end(epoch)
    return used


@pytest.mark.parametrize("temperature", [2.0, 0.5])
def test_weights_follow_the_formula_on_known_epoch_means(temperature: float) -> None:
    weighting = WEIGHTINGS.get("dwa")(TERMS, temperature=temperature)
    epochs = [[[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]],  # means 2, 2, 2
              [[1.0, 1.5, 3.0]],
              [[0.5, 1.5, 1.5], [0.5, 1.5, 1.5]],
              [[0.1, 0.1, 0.1]]]
    used = [_feed_epoch(weighting, e, batches) for e, batches in enumerate(epochs)]
    assert all(w == [1.0] * len(IDS) for epoch in used[:2] for w in epoch)
    for got, expected in ((used[2], dwa_formula([1.0, 1.5, 3.0], [2.0, 2.0, 2.0], temperature)),
                          (used[3], dwa_formula([0.5, 1.5, 1.5], [1.0, 1.5, 3.0], temperature))):
        for weights in got:
            assert weights == pytest.approx(expected, rel=1e-6)
            assert sum(weights) == pytest.approx(len(IDS))


def test_history_is_carried_by_the_state_dict() -> None:
    weighting = WEIGHTINGS.get("dwa")(TERMS)
    for epoch, values in enumerate([[1.0, 2.0, 3.0], [2.0, 1.0, 3.0]]):
        _feed_epoch(weighting, epoch, [values])
    restored = WEIGHTINGS.get("dwa")(TERMS)
    restored.load_state_dict(weighting.state_dict())
    weights = restored.weigh(torch.zeros(len(IDS)), step_ctx(), None).tolist()
    assert weights == pytest.approx(dwa_formula([2.0, 1.0, 3.0], [1.0, 2.0, 3.0], 2.0))


@pytest.mark.parametrize("params, name", [({"temperature": 0}, "temperature"), ({"T": 2}, "T")])
def test_bad_parameters_are_named(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        WEIGHTINGS.get("dwa")(TERMS, **params)


def test_digits_run_weights_the_third_epoch_by_the_first_two(home: Path) -> None:
    reporter = NullReporter()
    result = execute_run(digits_spec({"name": "dwa"}, epochs=3), "dwa", home, reporter)
    assert result["test_acc"] > 0.3
    logged = {p["id"]: {r[2]: r[4] for r in reporter.rows if r[0] == "main" and r[3] == f"weight/path:{p['id']}"}
              for p in PATHS}
    assert all(w[0] == 1.0 and w[1] == 1.0 for w in logged.values())
    state = torch.load(run_dir(home, "dwa") / "checkpoints" / "epoch_001.pt", weights_only=True)["weighting"]
    before, last = state["epoch_means"].tolist()
    expected = dwa_formula(last, before, 2.0)
    assert [logged[p["id"]][2] for p in PATHS] == pytest.approx(expected, rel=1e-5)
    assert sum(expected) == pytest.approx(len(PATHS)) and max(expected) - min(expected) > 1e-3
