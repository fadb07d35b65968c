"""Version-1 specs (one ``aggregator``) keep working: parsed into a weighting and a path method, queued runs of
the old format train, and a run interrupted before the split resumes from its old checkpoint exactly."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from engine.runner import execute_run
from engine.spec import SPEC_VERSION, parse_spec, spec_to_dict
from engine.store import Store, run_dir
from engine.train import NullReporter
from engine.worker import serve
from tests.conftest import tiny_spec_dict

OLD_WEIGHTINGS = ["equal", "fixed", "uncertainty", "adaptive_distillation", "gradnorm", "dwa", "mgda", "pcgrad",
                  "lookahead"]
OLD_METHODS = ["amtml", "sakd", "dfa"]


def version_1(aggregator: dict, **overrides) -> dict:
    data = tiny_spec_dict(**overrides)
    data.update(version=1, aggregator=aggregator)
    return data


@pytest.mark.parametrize("name", OLD_WEIGHTINGS)
def test_a_weighting_aggregator_becomes_the_weighting(name: str) -> None:
    spec = parse_spec(version_1({"name": name, "params": {"example": 1}} if name == "fixed" else {"name": name}))
    assert spec.version == SPEC_VERSION
    assert spec.weighting.name == name and spec.method is None
    assert spec.combination == name


@pytest.mark.parametrize("name", OLD_METHODS)
def test_a_method_aggregator_becomes_the_method_weighted_fixed(name: str) -> None:
    spec = parse_spec(version_1({"name": name, "params": {"seed": 3}}))
    assert spec.method is not None and spec.method.name == name and spec.method.params == {"seed": 3}
    assert spec.weighting.name == "fixed" and spec.weighting.params == {}
    assert spec.combination == f"{name} · fixed"
    # what a run stores and a user downloads is the current format
    stored = spec_to_dict(spec)
    assert "aggregator" not in stored and stored["version"] == SPEC_VERSION


def test_params_of_an_old_aggregator_are_kept_and_checked() -> None:
    spec = parse_spec(version_1({"name": "fixed", "params": {"task_weight": 0.1}}))
    assert spec.weighting.params == {"task_weight": 0.1}


def test_a_spec_mixing_both_formats_is_refused_by_name() -> None:
    data = version_1({"name": "equal"})
    data["weighting"] = {"name": "dwa"}
    with pytest.raises(ValueError, match="aggregator"):
        parse_spec(data)


def test_a_queued_version_1_run_trains_with_its_method(home: Path) -> None:
    """A run queued before the upgrade (its stored YAML is version 1) is run by the new worker."""
    old = version_1({"name": "amtml", "params": {"alpha": 0.5}}, epochs=1)
    store = Store(home)
    run_id = store.create_run(yaml.safe_dump(old), "old amtml")
    serve(home, once=True)
    run = store.get_run(run_id)
    assert run.status == "done", run.error
    keys = {row["key"] for row in store.metrics(run_id, phase="main")}
    assert {"loss/amtml/fused_kd", "weight/amtml/fused_kd", "loss/task", "weight/task"} <= keys
    # the task weighs 1 - alpha, as the old aggregator had it
    assert {row["value"] for row in store.metrics(run_id, ["weight/task"], phase="main")} == {0.5}
    store.close()


@pytest.mark.parametrize("name", ["uncertainty", "amtml"])
def test_a_run_resumes_from_a_checkpoint_written_before_the_split(name: str, home: Path) -> None:
    """An old last.pt holds one "aggregator" state; it loads into the role that took the old aggregator over,
    and the resumed run ends bit for bit where an uninterrupted one does."""
    data = version_1({"name": name}, epochs=3)
    execute_run(parse_spec(data), "straight", home, NullReporter())
    execute_run(parse_spec({**data, "epochs": 2}), "resumed", home, NullReporter())
    last = run_dir(home, "resumed") / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    role = "method" if name == "amtml" else "weighting"
    assert state[role], f"{name} keeps its state in the {role}"
    old_state = {k: v for k, v in state.items() if k not in ("method", "weighting")} | {"aggregator": state[role]}
    torch.save(old_state, last)
    reporter = NullReporter()
    execute_run(parse_spec(data), "resumed", home, reporter)
    assert any("resumed main" in message for _, message in reporter.events)
    final = {run: torch.load(run_dir(home, run) / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
             for run in ("straight", "resumed")}
    assert all(torch.equal(final["straight"][k], final["resumed"][k]) for k in final["straight"])
