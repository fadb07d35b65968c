"""Lookahead: the probe's measured effects gate each path's configured weight; harmful paths go to zero."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import yaml

from engine.diagnostics.verdicts import HELPS, NEUTRAL
from engine.paths.base import StepContext
from engine.runner import execute_run
from engine.spec import parse_spec
from engine.store import init_workspace
from engine.terms import TermInfo
from engine.train import NullReporter
from engine.weightings import WEIGHTINGS
from tests.conftest import ROOT

PLANTED = ROOT / "assets" / "configs" / "digits_planted.yaml"
IDS = ["helps", "hurts", "neutral"]
W0 = {"helps": 1.0, "hurts": 2.0, "neutral": 1000.0}
TERMS = [TermInfo(f"path:{pid}", W0[pid], path=pid, kind="kd") for pid in IDS]
CTX = StepContext(labels=torch.zeros(1), epoch=0, step=0, index=torch.zeros(1))
VALUES = torch.zeros(len(IDS))


def _make(**params):
    return WEIGHTINGS.get("lookahead")(TERMS, **params)


def _probe(benefits: dict[str, float], task_effect: float = -0.02) -> SimpleNamespace:
    """What on_probe reads: each path's latest effect beside the task's in probe.evidence.

    A benefit b is a path whose share lowers validation loss by b times what the task's share does; the probe
    judges a path with a benefit of 0.5 or more helpful."""
    def evidence(pid: str, b: float) -> SimpleNamespace:
        verdict = HELPS if b >= 0.5 else NEUTRAL
        return SimpleNamespace(effect=[b * task_effect], task_effect=[task_effect], verdict=verdict)

    return SimpleNamespace(evidence={pid: evidence(pid, b) for pid, b in benefits.items()},
                           rule=SimpleNamespace(window=8))


def _weights(weighting) -> dict[str, float]:
    return dict(zip(IDS, weighting.weigh(VALUES, CTX, None).tolist()))


def test_a_negative_stream_closes_the_gate_and_the_others_keep_theirs() -> None:
    weighting = _make()
    closed_after = None
    for n in range(1, 9):
        weighting.on_probe(_probe({"helps": 0.5, "hurts": -0.5, "neutral": -0.05}))
        if closed_after is None and weighting.gate[1] == 0.0:
            closed_after = n
    assert closed_after is not None and closed_after <= 4  # within a few probes
    assert weighting.gate.tolist() == [1.0, 0.0, 1.0]  # a mildly negative (neutral) path keeps its weight
    weights = _weights(weighting)
    assert weights == {pid: W0[pid] * m for pid, m in zip(IDS, weighting.gate.tolist())}


def test_weights_are_the_configured_ones_times_the_gate() -> None:
    weighting = _make()
    weighting.on_probe(_probe({"helps": 0.2, "hurts": -0.9, "neutral": 0.0}))
    gate = weighting.gate.tolist()
    assert 0.0 < gate[1] < 1.0  # partly closed
    assert _weights(weighting) == pytest.approx({pid: W0[pid] * m for pid, m in zip(IDS, gate)})


def test_a_closed_gate_reopens_gradually_once_the_path_agrees() -> None:
    weighting = _make()
    for _ in range(8):
        weighting.on_probe(_probe({"helps": 0.5, "hurts": -0.5, "neutral": 0.0}))
    history = []
    for _ in range(8):
        weighting.on_probe(_probe({"helps": 0.5, "hurts": 0.5, "neutral": 0.0}))
        history.append(float(weighting.gate[1]))
    assert history[0] == 0.0  # one good probe does not reopen it: the smoothed score is still negative
    assert history == sorted(history) and history[-1] == 1.0


def test_a_silenced_path_scoring_neutral_stays_silenced() -> None:
    weighting = _make()
    for _ in range(8):
        weighting.on_probe(_probe({"helps": 0.5, "hurts": -0.5, "neutral": 0.0}))
    for _ in range(20):  # silenced, the permuted teacher's disagreement weakens into the neutral band
        weighting.on_probe(_probe({"helps": 0.5, "hurts": 0.1, "neutral": 0.0}))
    assert weighting.gate.tolist() == [1.0, 0.0, 1.0]
    for _ in range(20):  # its share even lowers held-out loss now, but the probe does not judge it helpful
        weighting.on_probe(_probe({"helps": 0.5, "hurts": 0.4, "neutral": 0.0}))
    assert weighting.gate.tolist() == [1.0, 0.0, 1.0]


def test_without_a_probe_it_is_fixed() -> None:
    fixed = WEIGHTINGS.get("fixed")(TERMS)
    assert _weights(_make()) == dict(zip(IDS, fixed.weigh(VALUES, CTX, None).tolist()))


def test_a_term_without_a_path_keeps_its_base_weight() -> None:
    weighting = WEIGHTINGS.get("lookahead")([*TERMS, TermInfo("amtml/fused_kd", 3.0)])
    for _ in range(4):
        weighting.on_probe(_probe({"helps": 0.5, "hurts": -0.5, "neutral": 0.0}))
    assert weighting.weigh(torch.zeros(4), CTX, None).tolist() == [1.0, 0.0, 1000.0, 3.0]


def test_state_round_trips_through_a_checkpoint() -> None:
    weighting = _make()
    for score in (-0.6, -0.4, 0.3):
        weighting.on_probe(_probe({"helps": score, "hurts": -score, "neutral": 0.1}))
    state = weighting.state_dict()
    assert set(state) == {"signal", "gate"}  # the configured weights come from the spec, not the checkpoint
    restored = _make()
    restored.load_state_dict(state)
    assert torch.equal(restored.gate, weighting.gate) and torch.equal(restored.signal, weighting.signal)
    assert _weights(restored) == _weights(weighting)


@pytest.mark.parametrize("params, name", [({"beta": 1.0}, "beta"), ({"margin": -0.1}, "margin"),
                                          ({"rate": 0.0}, "rate"), ({"speed": 1.0}, "speed")])
def test_invalid_parameters_are_refused_by_name(params: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        _make(**params)


# ------------------------------------------------------------------ a real planted run
@pytest.fixture(scope="module")
def planted_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, NullReporter]]:
    """digits_planted.yaml for 4 epochs under equal and under lookahead, one workspace (the teachers train once).

    Every path weighs 1 to start with, so lookahead begins as equal and differs only by its gates.
    """
    home = tmp_path_factory.mktemp("lookahead") / "workspace"
    init_workspace(home)
    runs = {}
    for name in ("equal", "lookahead"):
        spec = yaml.safe_load(PLANTED.read_text())
        spec.update(epochs=4, weighting={"name": name})
        for path in spec["paths"]:
            path["weight"] = 1.0
        reporter = NullReporter()
        runs[name] = execute_run(parse_spec(spec), f"run-{name}", home, reporter), reporter
    return runs


def test_the_permuted_teachers_paths_are_driven_to_zero(planted_runs) -> None:
    _, reporter = planted_runs["lookahead"]
    for pid in ("good-kd-fc", "good-at-conv2", "permuted-kd-fc", "permuted-logits-fc"):
        weights = reporter.series(f"weight/path:{pid}")  # every path's configured weight is 1
        if pid.startswith("permuted-"):
            assert weights[-1] < 0.1, (pid, weights)
        else:
            assert min(weights) > 0.5, (pid, weights)  # a good path never loses half its weight


def test_gating_beats_equal_on_test_accuracy(planted_runs) -> None:
    equal, lookahead = planted_runs["equal"][0]["test_acc"], planted_runs["lookahead"][0]["test_acc"]
    print(f"digits_planted, 4 epochs: test accuracy equal {equal:.3f}, lookahead {lookahead:.3f}")
    assert lookahead > equal
