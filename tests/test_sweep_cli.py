"""python -m engine sweep: a grid of spec fields x seeds as one group, queued for local workers; every variant is
checked before anything is queued, and each bad --grid names its field."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from engine.cli import main
from engine.spec import spec_from_yaml
from engine.store import Store
from tests.conftest import tiny_spec_dict


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_spec_dict(weighting={"name": "dwa", "params": {"temperature": 3.0}})))
    return path


def _sweep(spec_file: Path, *args: str) -> int:
    return main(["sweep", str(spec_file), *args])


def _runs(home: Path) -> list:
    store = Store(home, readonly=True)
    try:
        return store.list_runs()
    finally:
        store.close()


def test_a_local_sweep_queues_every_combination_in_one_group(home: Path, spec_file: Path, capsys) -> None:
    code = _sweep(spec_file, "--grid", "aggregator=equal,dwa", "--grid", "optimizer.lr=0.1,0.01", "--seeds", "2")
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    runs = _runs(home)
    assert len(runs) == 8 and {r.status for r in runs} == {"queued"} and {r.placement for r in runs} == {None}
    group_id = out[0]
    assert {r.group_id for r in runs} == {group_id}
    assert out[-1] == f"sweep {group_id}: 8 runs queued for local workers (python -m engine worker trains them)"
    specs = [spec_from_yaml(r.spec_yaml) for r in runs]
    assert sorted((s.weighting.name, s.optimizer.lr, s.seed) for s in specs) == sorted(
        (w, lr, seed) for w in ("equal", "dwa") for lr in (0.1, 0.01) for seed in (0, 1))
    # The spec's own weighting keeps its params; another starts from its defaults.
    assert {s.weighting.name: s.weighting.params.get("temperature") for s in specs} == {"dwa": 3.0, "equal": None}
    named = {r.name for r in runs}
    assert "tiny · weighting.name=dwa · optimizer.lr=0.01 · seed 1" in named
    assert {line.split("\t")[0] for line in out[1:-1]} == {r.id for r in runs}


@pytest.mark.parametrize("grid, message", [
    ("optimizer.lrr=0.1,0.2", "--grid optimizer.lrr: no such field: optimizer has "),
    ("epochs", "--grid epochs: expected FIELD=V1,V2"),
    ("epochs=", "--grid epochs: no value given"),
    ("seed=1,2", "--grid seed: set by the sweep itself (use --seeds for seeds)"),
    ("paths.3.weight=1,2", "--grid paths.3.weight: paths has no item 3 (it holds 1"),
    ("epochs.x=1", "--grid epochs.x: epochs is a value, not a section"),
])
def test_a_bad_grid_names_its_field_and_queues_nothing(home: Path, spec_file: Path, capsys, grid: str,
                                                       message: str) -> None:
    assert _sweep(spec_file, "--grid", grid) == 2
    assert f"error: {message}" in capsys.readouterr().err
    assert _runs(home) == []


def test_a_field_given_twice_is_named(home: Path, spec_file: Path, capsys) -> None:
    assert _sweep(spec_file, "--grid", "epochs=1", "--grid", "epochs=2") == 2
    assert "error: --grid epochs: given twice; list all its values in one --grid" in capsys.readouterr().err


def test_one_invalid_variant_stops_the_whole_sweep(home: Path, spec_file: Path, capsys) -> None:
    assert _sweep(spec_file, "--grid", "epochs=2,zero", "--grid", "aggregator=equal,nosuch") == 2
    err = capsys.readouterr().err
    assert "error: tiny · epochs=zero · weighting.name=equal · seed 0: epochs:" in err
    assert "weighting.name=nosuch" in err and "nosuch" in err.split("weighting.name=nosuch", 1)[1]
    assert "error: nothing was queued: 4 variant(s), fix the spec or the --grid" in err
    assert _runs(home) == []


def test_ray_options_need_the_ray_executor_and_a_reachable_address(home: Path, spec_file: Path, capsys) -> None:
    assert _sweep(spec_file, "--grid", "epochs=1", "--address", "auto") == 2
    assert "error: --address and --storage: only for --executor ray" in capsys.readouterr().err
    assert _sweep(spec_file, "--grid", "epochs=1", "--executor", "ray", "--address", "127.0.0.1:9") == 2
    assert "error: Ray address 127.0.0.1:9: nothing answers at 127.0.0.1:9" in capsys.readouterr().err
    assert _runs(home) == []
