"""The CIFAR-100 reproduction specs: valid, in sync with their generator, and runnable end to end."""
from __future__ import annotations

import pickle
import runpy
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.cifar

from engine.runner import execute_run, teacher_cache_path
from engine.spec import load_spec, parse_spec
from engine.train import NullReporter
from engine.validate import validate_spec

FOLDER = Path(__file__).resolve().parents[1] / "assets" / "configs" / "cifar100"
SPECS = sorted(FOLDER.glob("*.yaml"))


def test_files_are_exactly_what_generate_py_writes() -> None:
    expected = runpy.run_path(str(FOLDER / "generate.py"))["render_all"]()
    assert sorted(expected) == [p.name for p in SPECS]
    assert len(SPECS) == 36  # 6 pairs x (student alone + 5 methods)
    for path in SPECS:
        assert path.read_text() == expected[path.name], f"{path.name} is stale: run generate.py"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_validates(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# CIFAR-100") and "Reference top-1: " in text.splitlines()[1]
    assert validate_spec(load_spec(path)) == []


def test_the_specs_of_a_pair_share_one_cached_teacher(tmp_path: Path) -> None:
    caches: dict[str, set[Path]] = {}
    for path in SPECS:
        spec = load_spec(path)
        for teacher in spec.teachers:
            pair = path.stem.rsplit("_", 1)[0]
            caches.setdefault(pair, set()).add(teacher_cache_path(teacher, spec, tmp_path))
    assert len(caches) == 6 and all(len(paths) == 1 for paths in caches.values())


def _write_fake_cifar100(root: Path, n_train: int, n_test: int) -> None:
    """Random images in torchvision's python-pickle layout: cifar-100-python/{train, test, meta}."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
                 "fine_labels": rng.integers(0, 100, n).tolist(), "coarse_labels": rng.integers(0, 20, n).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    meta = {"fine_label_names": [f"class{i}" for i in range(100)],
            "coarse_label_names": [f"super{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta))


def test_a_spec_runs_end_to_end_on_cifar_shaped_data(home: Path, tmp_path: Path, monkeypatch) -> None:
    _write_fake_cifar100(tmp_path / "data", n_train=300, n_test=60)
    # The fake files cannot have the real archive's checksums; everything after the check is real.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    data = load_spec(FOLDER / "resnet56_resnet20_kd.yaml").model_dump(mode="json")
    data["dataset"] |= {"root": str(tmp_path / "data"), "train_size": 128, "batch_size": 32}
    data["teachers"][0]["source"]["epochs"] = 1
    data |= {"epochs": 1, "log_every": 1}
    reporter = NullReporter()
    result = execute_run(parse_spec(data), "r", home, reporter)
    assert 0.0 <= result["test_acc"] <= 1.0
    assert "resnet56" in result["teacher_test_acc"]
    kd_losses = reporter.series("loss/path:kd")
    assert len(kd_losses) == 4 and all(v >= 0 for v in kd_losses)  # 128 samples / batch 32
    assert reporter.series("weight/path:kd") == pytest.approx([0.9] * 4)
