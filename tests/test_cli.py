"""python -m engine: the foreground run, validation exit codes, listings and export."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import yaml

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
    data["aggregator"] = {"name": "magic"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    proc = engine_cli("validate", str(bad))
    assert proc.returncode == 2
    assert "error: paths[0].teacher_spot: 'layer9' is not a spot of mlp" in proc.stderr
    assert "error: aggregator.name: unknown aggregator 'magic'" in proc.stderr
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
                              ("aggregators", "equal")):
        proc = engine_cli(command)
        assert proc.returncode == 0
        assert expected in [line.split()[0] for line in proc.stdout.splitlines()]
    spots = engine_cli("spots", "resnet20").stdout.splitlines()
    assert spots[0].split() == ["conv1", "feature_map", "16x32x32"]
    assert spots[-1].split() == ["fc", "logits", "10"]
