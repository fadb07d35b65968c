"""The planted defects added for the detector bench do what engine/diagnostics/planted.py says they do."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from engine.data import load_dataset
from engine.diagnostics.planted import (apply_model_defect, defect_strength, defective_train_split, rotated_images,
                                        shortcut_images)
from engine.models import build_model
from engine.spec import DatasetSpec, parse_spec
from engine.validate import validate_spec
from tests.conftest import tiny_spec_dict


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DatasetSpec(name="digits"))


def _train(x: torch.Tensor, y: torch.Tensor, epochs: int = 15, seed: int = 0) -> nn.Module:
    """A small_cnn trained by a plain loop: seconds on digits."""
    torch.manual_seed(seed)
    model = build_model("small_cnn", 10, 1, 8, {"width": 8})
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def trained(digits) -> nn.Module:
    return _train(digits.train.x, digits.train.y, epochs=3)


def _copy(model: nn.Module) -> nn.Module:
    clone = build_model("small_cnn", 10, 1, 8, {"width": 8})
    clone.load_state_dict(model.state_dict())
    return clone.eval()


def test_scaled_logits_are_k_times_the_clean_ones(digits, trained) -> None:
    scaled = _copy(trained)
    apply_model_defect(scaled, "scaled_logits", 12.5, seed=0)
    x = digits.test.x
    with torch.no_grad():
        clean, planted = trained(x), scaled(x)
    assert torch.allclose(planted, 12.5 * clean, rtol=1e-4, atol=1e-4)
    assert _accuracy(scaled, x, digits.test.y) == _accuracy(trained, x, digits.test.y)


def test_corrupted_features_keep_the_logits_and_rescale_the_feature_channels(digits, trained) -> None:
    corrupted = _copy(trained)
    apply_model_defect(corrupted, "corrupted_features", 30.0, seed=3)
    x = digits.test.x
    with torch.no_grad():
        assert torch.allclose(corrupted(x), trained(x), rtol=1e-3, atol=1e-3)
        for stage in ("conv1", "conv2"):
            clean_map = trained.conv2(trained.conv1(x)) if stage == "conv2" else trained.conv1(x)
            bad_map = corrupted.conv2(corrupted.conv1(x)) if stage == "conv2" else corrupted.conv1(x)
            ratio = bad_map.sum((0, 2, 3)) / clean_map.sum((0, 2, 3)).clamp_min(1e-6)
            live = clean_map.sum((0, 2, 3)) > 1e-3
            # Per-channel gains in [1/30, 30], spread over more than a factor of 10.
            assert ratio[live].min() >= 1 / 30 - 1e-3 and ratio[live].max() <= 30 + 1e-3
            assert ratio[live].max() / ratio[live].min() > 10
    again = _copy(trained)
    apply_model_defect(again, "corrupted_features", 30.0, seed=3)  # seeded: the same gains again
    assert torch.equal(again.conv1[1].weight, corrupted.conv1[1].weight)


def test_shortcut_teacher_reads_the_patch_and_is_weaker_on_clean_images(digits) -> None:
    split = defective_train_split(digits, "shortcut", 0.0, seed=0)
    assert not torch.equal(split.x, digits.train.x) and torch.equal(split.y, digits.train.y)
    assert torch.equal(split.x, shortcut_images(digits.train.x, digits.train.y))  # strength 1: every image
    half = defective_train_split(digits, "shortcut", 0.0, seed=0, strength=0.5)
    changed = (half.x != digits.train.x).flatten(1).any(1).float().mean().item()
    assert 0.35 < changed < 0.65
    teacher = _train(split.x, split.y, epochs=6)
    clean = _train(digits.train.x, digits.train.y, epochs=6)
    x, y = digits.test.x, digits.test.y
    assert _accuracy(teacher, shortcut_images(x, y), y) > 0.98  # it reads the patch
    assert _accuracy(teacher, x, y) < _accuracy(clean, x, y) - 0.1  # and leans on it


def test_rotated_input_and_under_trained_share(digits) -> None:
    rotated = defective_train_split(digits, "rotated_input", 0.0, seed=0)
    assert torch.equal(rotated.x, rotated_images(digits.train.x)) and torch.equal(rotated.y, digits.train.y)
    assert torch.equal(rotated_images(rotated_images(rotated_images(rotated.x))), digits.train.x)  # 4 turns
    assert len(defective_train_split(digits, "under_trained", 0.0, seed=0, strength=0.3)) == \
        int(len(digits.train) * 0.3)
    assert defect_strength("scaled_logits", None) == 20.0
    with pytest.raises(ValueError, match="strength"):
        defect_strength("shortcut", 2.0)


def test_runner_plants_model_defects_after_training(tmp_path: Path) -> None:
    """Through the spec and the runner: the cached scaled teacher's logits are k x its clean twin's (same id,
    since a teacher's batch order depends on its id)."""
    from engine.runner import prepare_teacher, teacher_cache_path
    from engine.train import NullReporter

    (tmp_path / "teachers").mkdir()
    specs, models = {}, {}
    for defect in ("none", "scaled_logits"):
        source = {"kind": "train", "epochs": 1, "optimizer": {"name": "sgd", "lr": 0.05}, "defect": defect}
        if defect != "none":
            source["strength"] = 8.0
        spec = specs[defect] = parse_spec({"name": "defects", "dataset": {"name": "digits"},
                                           "teachers": [{"id": "t", "arch": "small_cnn", "source": source}],
                                           "student": {"arch": "small_cnn"}, "paths": [], "epochs": 1})
        bundle = load_dataset(spec.dataset)
        models[defect] = prepare_teacher(spec.teachers[0], spec, bundle, tmp_path, torch.device("cpu"),
                                         NullReporter(), lambda f: None)
    with torch.no_grad():
        clean, scaled = models["none"][0](bundle.test.x), models["scaled_logits"][0](bundle.test.x)
    assert torch.allclose(scaled, 8.0 * clean, rtol=1e-3, atol=1e-3)
    assert models["none"][1] == pytest.approx(models["scaled_logits"][1])
    # An unset strength leaves the recipe of before (no "strength" key), so older cached teachers stay valid.
    clean_source = specs["none"].teachers[0].source
    assert "strength" not in clean_source.model_dump(mode="json", exclude_none=True)
    paths = {teacher_cache_path(s.teachers[0], s, tmp_path) for s in specs.values()}
    assert len(paths) == 2 and all(p.exists() for p in paths)


@pytest.mark.parametrize("defect, strength, message", [
    ("permuted_labels", 3.0, "teachers[0].source.strength: defect permuted_labels takes no strength"),
    ("under_trained", 3.0, "teachers[0].source.strength: defect under_trained: strength must lie in (0, 1], got 3"),
])
def test_validation_names_a_strength_that_cannot_apply(defect: str, strength: float, message: str) -> None:
    data = tiny_spec_dict()
    data["teachers"][0]["source"] = {"kind": "train", "epochs": 1, "defect": defect, "strength": strength}
    assert any(problem.startswith(message) for problem in validate_spec(parse_spec(data)))
