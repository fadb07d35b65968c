"""Planted-defect teachers and the detector on a real digits run."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.data import load_dataset
from engine.diagnostics.planted import defective_train_split, derangement
from engine.spec import DatasetSpec, load_spec
from tests.conftest import ROOT, engine_cli

PLANTED = ROOT / "assets" / "configs" / "digits_planted.yaml"


def test_defects_change_only_what_they_say() -> None:
    bundle = load_dataset(DatasetSpec(name="digits"))
    train = bundle.train
    permuted = defective_train_split(bundle, "permuted_labels", 0.0, seed=0)
    mapping = {int(a): int(b) for a, b in zip(train.y, permuted.y)}
    assert len(set(mapping.values())) == 10 and all(a != b for a, b in mapping.items())  # a derangement
    assert torch.equal(permuted.x, train.x)
    noisy = defective_train_split(bundle, "noisy_labels", 0.3, seed=0)
    assert abs((noisy.y != train.y).float().mean().item() - 0.3) < 0.05
    assert torch.equal(defective_train_split(bundle, "inverted_input", 0.0, seed=0).x, -train.x)
    assert len(defective_train_split(bundle, "under_trained", 0.0, seed=0)) == int(len(train) * 0.1)
    assert defective_train_split(bundle, "none", 0.0, seed=0) is train
    perm = derangement(5, torch.Generator().manual_seed(1))
    assert sorted(perm.tolist()) == list(range(5)) and not (perm == torch.arange(5)).any()


def test_planted_run_flags_exactly_the_permuted_teachers_paths(home: Path) -> None:
    spec = load_spec(PLANTED)
    assert {t.id for t in spec.teachers} == {"good", "permuted"}
    assert all(p.id.startswith(p.teacher + "-") for p in spec.paths)
    proc = engine_cli("run", str(PLANTED), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {p.id: ("hurts" if p.teacher == "permuted" else result["verdicts"][p.id]) for p in spec.paths}
    assert result["verdicts"] == expected
    assert all(v != "hurts" for pid, v in result["verdicts"].items() if pid.startswith("good-"))
    total_steps = spec.epochs * -(-int(len(load_dataset(spec.dataset).train)) // spec.dataset.batch_size)
    for pid, details in result["verdict_details"].items():
        if pid.startswith("permuted-"):
            assert details["first_flagged_step"] <= 0.2 * total_steps, (pid, details)
        else:
            assert details["first_flagged_step"] is None, (pid, details)
