"""python -m engine: the foreground run, validation exit codes (version-1 files too), listings and export."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import yaml

from engine.methods import METHODS
from engine.params import describe_params, format_default
from engine.spec import apply_overrides, parse_spec
from engine.spec_yaml import load_spec_data
from engine.weightings import WEIGHTINGS
from tests.conftest import ROOT, engine_cli, tiny_spec_dict


def test_run_demo_spec_prints_json_last(home: Path) -> None:
    started = time.monotonic()
    proc = engine_cli("run", str(ROOT / "assets" / "configs" / "digits_kd.yaml"))
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "done" and result["test_acc"] > 0.85, result
    print(f"digits_kd.yaml: {elapsed:.1f}s wall, test acc {result['test_acc']:.4f}")
    shown = engine_cli("show", result["run_id"])
    assert "status: done" in shown.stdout
    listed = engine_cli("ls")
    assert result["run_id"] in listed.stdout


def test_export_writes_long_csv(home: Path, tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec_dict()))
    result = json.loads(engine_cli("run", str(spec)).stdout.strip().splitlines()[-1])
    out = tmp_path / "m.csv"
    assert engine_cli("export", result["run_id"], "--csv", str(out)).returncode == 0
    rows = list(csv.DictReader(out.open()))
    assert {"run_id", "phase", "step", "epoch", "key", "value"} == set(rows[0])
    assert any(r["key"] == "loss/path:t-kd" for r in rows)


def test_validate_lists_every_error_and_exits_2(tmp_path: Path) -> None:
    data = tiny_spec_dict()
    data["paths"][0]["teacher_spot"] = "layer9"
    data["weighting"] = {"name": "magic"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    proc = engine_cli("validate", str(bad))
    assert proc.returncode == 2
    assert "error: paths[0].teacher_spot: 'layer9' is not a spot of mlp" in proc.stderr
    assert "error: weighting.name: unknown weighting 'magic'" in proc.stderr
    assert engine_cli("validate", str(ROOT / "assets" / "configs" / "digits_kd.yaml")).returncode == 0


def test_validate_reports_yaml_type_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("student: {arch: mlp}\nepochs: many\n")
    proc = engine_cli("validate", str(bad))
    assert proc.returncode == 2 and "error: epochs: Input should be a valid integer" in proc.stderr
    proc = engine_cli("validate", str(tmp_path / "absent.yaml"))
    assert proc.returncode == 2 and "cannot read" in proc.stderr


def test_listings_name_first() -> None:
    for command, expected in (("datasets", "digits"), ("models", "resnet20"), ("distillers", "kd"),
                              ("weightings", "equal")):
        proc = engine_cli(command)
        assert proc.returncode == 0
        assert expected in [line.split()[0] for line in proc.stdout.splitlines()]
    spots = engine_cli("spots", "resnet20").stdout.splitlines()
    assert spots[0].split() == ["conv1", "feature_map", "16x32x32"]
    assert spots[-1].split() == ["fc", "logits", "10"]


def _listed(command: str) -> dict[str, list[str]]:
    """Plugin name -> its indented parameter lines, from a listing's output."""
    entries: dict[str, list[str]] = {}
    for line in engine_cli(command, check=True).stdout.splitlines():
        if line.startswith("    "):
            entries[name].append(line.strip())
        else:
            name = line.split()[0]
            entries[name] = []
    return entries


@pytest.mark.parametrize("command", ["weightings", "methods"])
def test_role_listings_name_every_plugin_with_its_params(command: str) -> None:
    registry = WEIGHTINGS if command == "weightings" else METHODS
    listed = _listed(command)
    assert list(listed) == registry.names()
    for entry in registry:
        rows = describe_params(entry.obj.params_model)
        if not rows:
            assert listed[entry.name] == ["(no parameters)"]
        for row in rows:  # each parameter on its own line: name, type and default
            assert any(line.startswith(f"{row['name']} ") and f"{row['type']} = {format_default(row['default'])}"
                       in line for line in listed[entry.name]), (entry.name, row["name"])


def test_weighting_and_method_listings_show_known_params() -> None:
    assert any(line.startswith("task_weight ") and "= 1.0" in line for line in _listed("weightings")["fixed"])
    assert any(line.startswith("alpha ") for line in _listed("methods")["amtml"])


def test_aggregators_listing_names_its_two_replacements() -> None:
    proc = engine_cli("aggregators")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "python -m engine weightings" in proc.stderr and "python -m engine methods" in proc.stderr


def _version1_file(tmp_path: Path) -> Path:
    data = tiny_spec_dict(aggregator={"name": "amtml", "params": {"alpha": 0.5}})
    path = tmp_path / "v1.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_version1_file_validates_and_takes_weighting_overrides(tmp_path: Path) -> None:
    old = _version1_file(tmp_path)
    proc = engine_cli("validate", str(old))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{old}: ok"
    proc = engine_cli("validate", str(old), "--set", "weighting.name=dwa")
    assert proc.returncode == 0, proc.stderr
    spec = parse_spec(apply_overrides(load_spec_data(old), ["weighting.name=dwa"]))
    assert spec.method.name == "amtml" and spec.method.params == {"alpha": 0.5}
    assert spec.weighting.name == "dwa" and spec.combination == "amtml · dwa"


def test_set_aggregator_says_which_fields_replace_it(tmp_path: Path) -> None:
    proc = engine_cli("validate", str(_version1_file(tmp_path)), "--set", "aggregator.name=dwa")
    assert proc.returncode == 2
    assert "--set aggregator.name=dwa: specs have no aggregator since version 2" in proc.stderr
    assert "weighting.name" in proc.stderr and "method.name" in proc.stderr
