"""engine/lessons.py: the Learn page's model work (teacher file header, one sample per class, a forward pass)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data import dataset_signature
from engine.lessons import lesson_samples, teacher_file_header, teacher_logits
from engine.models import build_model
from engine.spec import DatasetSpec


def test_a_saved_teacher_runs_on_one_sample_per_class(tmp_path: Path) -> None:
    dataset = DatasetSpec(name="digits")
    (channels, size, _), classes = dataset_signature(dataset)
    torch.manual_seed(0)
    model = build_model("mlp", classes, channels, size, {"hidden": [16]})
    path = tmp_path / "teacher.pt"
    torch.save({"arch": "mlp", "state_dict": model.state_dict(), "test_acc": 0.5}, path)
    assert teacher_file_header(path) == ("mlp", 0.5)
    samples = lesson_samples(dataset)
    assert sorted(samples.labels.tolist()) == list(range(classes)) and len(samples.class_names) == classes
    assert samples.images.min() >= 0 and samples.images.max() <= 1
    logits = teacher_logits(path, "mlp", {"hidden": [16]}, dataset, samples.x)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(samples.x)).numpy()
    assert logits.shape == (len(samples.labels), classes)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_a_file_for_another_architecture_is_refused(tmp_path: Path) -> None:
    dataset = DatasetSpec(name="digits")
    (channels, size, _), classes = dataset_signature(dataset)
    path = tmp_path / "teacher.pt"
    torch.save({"arch": "mlp", "state_dict": build_model("mlp", classes, channels, size, {"hidden": [16]}).state_dict()},
               path)
    with pytest.raises(RuntimeError):
        teacher_logits(path, "mlp", {"hidden": [32]}, dataset, lesson_samples(dataset).x)
