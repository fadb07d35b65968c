"""Comparison groups in the engine: a spec under weightings x seeds, one group, the same from the CLI and Configure."""
from __future__ import annotations

from pathlib import Path

import yaml

from engine.comparison import GROUP_PREFIX, comparison_variants, plan_comparison, submit_comparison
from engine.spec import parse_spec, spec_from_yaml, spec_to_dict
from engine.store import Store
from tests.conftest import engine_cli, tiny_spec_dict


def test_plan_keeps_valid_variants_and_names_the_invalid(home: Path) -> None:
    base = spec_to_dict(parse_spec(tiny_spec_dict()))
    plan = plan_comparison(base, ["equal", "nonsense"], [0, 1], home)
    assert [s.name for s in plan.valid] == ["tiny · equal · seed 0", "tiny · equal · seed 1"]
    assert [name for name, _ in plan.invalid] == ["tiny · nonsense · seed 0", "tiny · nonsense · seed 1"]
    assert all(any("weighting.name" in line for line in errors) for _, errors in plan.invalid)


def test_submit_queues_one_group(home: Path) -> None:
    base = spec_to_dict(parse_spec(tiny_spec_dict()))
    plan = plan_comparison(base, ["equal", "fixed"], [3], home)
    store = Store(home)
    group_id, run_ids = submit_comparison(store, plan)
    assert group_id.startswith(GROUP_PREFIX)
    runs = store.list_runs(group_id=group_id)
    assert sorted(r.id for r in runs) == sorted(run_ids)
    specs = {spec_from_yaml(r.spec_yaml).weighting.name: spec_from_yaml(r.spec_yaml) for r in runs}
    assert set(specs) == {"equal", "fixed"} and all(s.seed == 3 for s in specs.values())


def test_variants_keep_params_of_the_own_weighting_only() -> None:
    base = spec_to_dict(parse_spec(tiny_spec_dict()))
    base["weighting"] = {"name": "fixed", "params": {"task_weight": 0.5}}
    own, other = comparison_variants(base, ["fixed", "equal"], [0])
    assert own["weighting"]["params"] == {"task_weight": 0.5} and other["weighting"]["params"] == {}


def test_variants_keep_the_path_method_and_name_the_combination(home: Path) -> None:
    base = spec_to_dict(parse_spec(tiny_spec_dict(method={"name": "amtml", "params": {"alpha": 0.5}},
                                                  weighting={"name": "fixed", "params": {"task_weight": 0.5}})))
    plan = plan_comparison(base, ["fixed", "dwa"], [0], home)
    assert plan.invalid == []
    assert [s.name for s in plan.valid] == ["tiny · amtml · fixed · seed 0", "tiny · amtml · dwa · seed 0"]
    assert [s.combination for s in plan.valid] == ["amtml · fixed", "amtml · dwa"]
    assert all(s.method.name == "amtml" and s.method.params == {"alpha": 0.5} for s in plan.valid)
    assert [s.weighting.params for s in plan.valid] == [{"task_weight": 0.5}, {}]


def test_version1_data_is_migrated_before_the_variants() -> None:
    old = tiny_spec_dict(aggregator={"name": "amtml", "params": {"alpha": 0.5}})
    (variant,) = comparison_variants(old, ["uncertainty"], [0])
    assert "aggregator" not in variant
    assert variant["method"] == {"name": "amtml", "params": {"alpha": 0.5}}
    assert variant["weighting"] == {"name": "uncertainty", "params": {}}
    assert variant["name"] == "tiny · amtml · uncertainty · seed 0"


def test_cli_compare_prints_the_group_and_its_runs(home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict()))
    proc = engine_cli("compare", str(spec), "--weightings", "equal,fixed", "--seeds", "2", "--set", "epochs=1")
    assert proc.returncode == 0, proc.stderr
    group_id, *lines = proc.stdout.strip().splitlines()
    assert group_id.startswith(GROUP_PREFIX)
    names = [line.split("\t")[1] for line in lines]
    assert names == ["tiny · equal · seed 0", "tiny · equal · seed 1", "tiny · fixed · seed 0", "tiny · fixed · seed 1"]
    runs = Store(home, readonly=True).list_runs(group_id=group_id)
    assert sorted(r.id for r in runs) == sorted(line.split("\t")[0] for line in lines)
    assert all(spec_from_yaml(r.spec_yaml).epochs == 1 for r in runs)


def test_cli_compare_weightings_of_a_version1_method_spec(home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "v1.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict(aggregator={"name": "amtml", "params": {"alpha": 0.5}})))
    proc = engine_cli("compare", str(spec), "--weightings", "fixed,uncertainty", "--seeds", "0,4")
    assert proc.returncode == 0, proc.stderr
    group_id, *lines = proc.stdout.strip().splitlines()
    names = [line.split("\t")[1] for line in lines]
    assert names == ["tiny · amtml · fixed · seed 0", "tiny · amtml · fixed · seed 4",
                     "tiny · amtml · uncertainty · seed 0", "tiny · amtml · uncertainty · seed 4"]
    stored = [spec_from_yaml(r.spec_yaml) for r in Store(home, readonly=True).list_runs(group_id=group_id)]
    assert {s.combination for s in stored} == {"amtml · fixed", "amtml · uncertainty"}
    assert all(s.method.params == {"alpha": 0.5} and s.version == 2 for s in stored)
    assert "aggregator" not in stored[0].model_dump()


def test_cli_compare_with_no_valid_variant_exits_2(home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict()))
    proc = engine_cli("compare", str(spec), "--weightings", "nonsense", "--seeds", "0,4")
    assert proc.returncode == 2
    assert "nonsense · seed 4" in proc.stderr and "weighting.name" in proc.stderr
