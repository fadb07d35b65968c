"""Checkpoint files: formats (.pt .pth .th .bin .safetensors), nested and prefixed state dicts, files that fit
another architecture or none, and students initialised from a checkpoint or a finished run."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.models import build_model
from engine.models.checkpoint import (CHECKPOINT_EXTENSIONS, CheckpointError, describe_checkpoint, load_weights,
                                      read_state_dict)
from engine.spec import parse_spec
from engine.validate import validate_spec
from tests.conftest import tiny_spec_dict

AKAMASTER = Path(__file__).resolve().parents[1] / "../shared/data/checkpoints/akamaster-cifar10"
CIFAR_JPG = Path(__file__).resolve().parents[1] / "../shared/data/cifar10-jpg"
RESNET20 = AKAMASTER / "resnet20-12fca82f.th"
RESNET56 = AKAMASTER / "resnet56-4bfd9763.th"
needs_shared = pytest.mark.skipif(not RESNET20.is_file() or not CIFAR_JPG.is_dir(), reason="../shared/data absent")


def _same_weights(a: torch.nn.Module, b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, b[k]) for k, v in a.state_dict().items() if not k.endswith("num_batches_tracked"))


def _mlp_state(seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_model("mlp", 10, 1, 8, {"hidden": [16]}).state_dict()


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "net", "module", "nested", "module_prefix",
                                  "model_prefix", "both_prefixes"])
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".th", ".bin"])
def test_torch_checkpoints_nested_and_prefixed_load(tmp_path: Path, wrap: str, suffix: str) -> None:
    state = _mlp_state()
    saved = {
        "plain": state, "state_dict": {"state_dict": state, "epoch": 3}, "model": {"model": state},
        "net": {"net": state, "acc": 0.5}, "module": {"module": state},
        "nested": {"checkpoint": 1, "model": {"state_dict": state}},
        "module_prefix": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
        "model_prefix": {f"model.{k}": v for k, v in state.items()},
        "both_prefixes": {"net": {f"module.model.{k}": v for k, v in state.items()}},
    }[wrap]
    path = tmp_path / f"weights{suffix}"
    torch.save(saved, path)
    model = build_model("mlp", 10, 1, 8, {"hidden": [16]})
    load_weights(model, path, arch="mlp")
    assert _same_weights(model, state)


def test_safetensors_loads_without_pickle(tmp_path: Path) -> None:
    state = _mlp_state()
    path = tmp_path / "weights.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in state.items()}, str(path))
    model = build_model("mlp", 10, 1, 8, {"hidden": [16]})
    load_weights(model, path, arch="mlp")
    assert _same_weights(model, state)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        read_state_dict(broken)


def test_unknown_file_type_names_the_accepted_ones(tmp_path: Path) -> None:
    path = tmp_path / "weights.ckpt"
    torch.save(_mlp_state(), path)
    with pytest.raises(CheckpointError, match=r"weights.ckpt.*\.pt \.pth \.th \.bin \.safetensors"):
        read_state_dict(path)
    assert CHECKPOINT_EXTENSIONS == (".pt", ".pth", ".th", ".bin", ".safetensors")


@needs_shared
def test_akamaster_checkpoints_load_and_are_described() -> None:
    model = build_model("resnet20", 10, 3, 32, {})
    load_weights(model, RESNET20, arch="resnet20")
    info = describe_checkpoint(AKAMASTER / "resnet32-d509ac18.th")
    assert info.fits == ["resnet32 (10 classes)"]
    assert "fits resnet32 (10 classes)" in info.describe()


def test_a_checkpoint_that_fits_nothing_says_so(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(4, 4), "decoder.bias": torch.zeros(4)}}, path)
    data = tiny_spec_dict()
    data["teachers"][0]["source"] = {"kind": "checkpoint", "path": str(path)}
    (error,) = validate_spec(parse_spec(data))
    assert error.startswith("teachers[0].source.path: checkpoint ")
    assert "foreign.pt" in error and "does not fit mlp" in error
    assert error.endswith("it fits none of the registered architectures")


@needs_shared
def test_safetensors_of_another_model_names_the_architecture_it_fits(tmp_path: Path, home: Path) -> None:
    path = tmp_path / "mystery.safetensors"
    save_file({k: v.contiguous() for k, v in read_state_dict(RESNET56).items()}, str(path))  # keeps 'module.'
    data = tiny_spec_dict(dataset={"name": "image_folder", "root": str(CIFAR_JPG)})
    data["teachers"][0].update(arch="resnet20", arch_params={}, source={"kind": "checkpoint", "path": str(path)})
    data["student"]["source"] = {"kind": "checkpoint", "path": str(path)}
    errors = validate_spec(parse_spec(data), home)
    assert [e.split(":")[0] for e in errors] == ["student.source.path", "teachers[0].source.path"]
    for error in errors:
        assert "mystery.safetensors does not fit" in error and error.endswith("it fits: resnet56 (10 classes)")
    assert len(errors[1].splitlines()) < 30


def test_student_source_problems_are_named_before_launch(tmp_path: Path, home: Path) -> None:
    data = tiny_spec_dict()
    data["student"]["source"] = {"kind": "checkpoint", "path": str(tmp_path / "absent.pt")}
    assert validate_spec(parse_spec(data), home) == [
        f"student.source.path: no checkpoint file at {tmp_path / 'absent.pt'}"]
    data["student"]["source"] = {"kind": "run", "run_id": "ghost"}
    assert validate_spec(parse_spec(data), home) == ["student.source.run_id: no run 'ghost' in the workspace"]
    data["student"]["source"] = {"kind": "pretrained"}
    (error,) = validate_spec(parse_spec(data), home)
    assert error.startswith("student.source: mlp has no published weights")


def test_student_head_of_another_size_is_replaced_and_reported(tmp_path: Path) -> None:
    from engine.data import load_dataset
    from engine.runner import build_learner
    from engine.train import NullReporter

    torch.manual_seed(3)
    source = build_model("mlp", 4, 1, 8, {"hidden": [16]})  # a 4-class model; digits has 10 classes
    path = tmp_path / "four_classes.pth"
    torch.save({"model": source.state_dict()}, path)
    data = tiny_spec_dict(teachers=[], paths=[])
    data["student"]["source"] = {"kind": "checkpoint", "path": str(path)}
    spec = parse_spec(data)
    assert validate_spec(spec) == []
    reporter = NullReporter()
    learner = build_learner(spec, load_dataset(spec.dataset), {}, torch.device("cpu"), None, reporter)
    student = learner.student.model
    assert torch.equal(student.hidden[0][0].weight, source.hidden[0][0].weight)
    assert student.fc.weight.shape == (10, 16)
    torch.manual_seed(spec.seed)  # the new head is the seeded scratch head
    scratch = build_model("mlp", 10, 1, 8, {"hidden": [16]})
    assert torch.equal(student.fc.weight, scratch.fc.weight)
    messages = [m for _, m in reporter.events]
    assert any("head replaced" in m and "4-class" in m and "10-class" in m for m in messages), messages


def test_student_from_a_finished_run_starts_from_its_final_weights(home: Path) -> None:
    from engine.data import load_dataset
    from engine.runner import build_learner, execute_run
    from engine.store import run_dir
    from engine.train import NullReporter

    run_id = "first"
    execute_run(parse_spec(tiny_spec_dict(epochs=1)), run_id, home, NullReporter())
    final = torch.load(run_dir(home, run_id) / "checkpoints" / "final.pt", weights_only=True)["state_dict"]
    data = tiny_spec_dict(teachers=[], paths=[])
    data["student"]["source"] = {"kind": "run", "run_id": run_id}
    spec = parse_spec(data)
    learner = build_learner(spec, load_dataset(spec.dataset), {}, torch.device("cpu"), home, NullReporter())
    assert _same_weights(learner.student.model, final)


@needs_shared
def test_student_from_the_akamaster_checkpoint_has_its_accuracy_before_training(tmp_path: Path, home: Path) -> None:
    from engine.data import load_dataset
    from engine.runner import build_learner
    from engine.train import NullReporter, evaluate

    root = tmp_path / "cifar"
    for split, count in (("train", 2), ("test", 20)):  # 200 test images, 20 per class
        for folder in sorted((CIFAR_JPG / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.glob("*.jpg"))[:count]:
                shutil.copy(image, root / split / folder.name / image.name)
    data = tiny_spec_dict(teachers=[], paths=[], dataset={"name": "image_folder", "root": str(root),
                                                          "normalize": "imagenet", "val_fraction": 0.1})
    data["student"] = {"arch": "resnet20", "source": {"kind": "checkpoint", "path": str(RESNET20)}}
    spec = parse_spec(data)
    assert validate_spec(spec, home) == []
    bundle = load_dataset(spec.dataset)
    cpu = torch.device("cpu")
    learner = build_learner(spec, bundle, {}, cpu, home, NullReporter())
    accuracy, _ = evaluate(learner.student.model, bundle.test, cpu)
    reference = build_model("resnet20", 10, 3, 32, {})  # the published weights loaded by hand
    reference.load_state_dict({k.removeprefix("module."): v for k, v in
                               torch.load(RESNET20, map_location="cpu", weights_only=True)["state_dict"].items()})
    expected, _ = evaluate(reference, bundle.test, cpu)
    assert accuracy == expected
    assert accuracy > 0.65  # about 80% on CIFAR JPEGs; chance is 10%
