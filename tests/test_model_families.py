"""torchvision:<name> and timm:<name> models: names, params, spots from the fx graph, published weights read
only from the local caches (offline errors name the file and the folder), heads, and a tiny CIFAR run."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine.models import MODELS, build_model, model_params
from engine.models.families import family_models
from engine.models.spots import TappedModel, list_spots
from engine.spec import PretrainedSource, parse_spec
from engine.validate import validate_spec
from tests.conftest import engine_cli, tiny_spec_dict

CIFAR_JPG = Path(__file__).resolve().parents[1] / "../shared/data/cifar10-jpg"
CIFAR = (3, 32, 32)


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty torch hub and Hugging Face caches under tmp_path, and any network connection fails loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    return tmp_path


def test_family_names_resolve_on_demand_and_stay_out_of_the_list() -> None:
    assert "timm:resnet10t" in MODELS and "torchvision:resnet50" in MODELS
    assert "timm:no_such_net" not in MODELS and "torchvision:fasterrcnn_resnet50_fpn" not in MODELS
    assert not any(":" in name for name in MODELS.names())
    with pytest.raises(KeyError, match=r"timm has no model 'resnet_18'; close: timm:resnet18"):
        MODELS.entry("timm:resnet_18")
    with pytest.raises(KeyError, match=r"timm:<name>"):
        MODELS.entry("resnet_18")
    assert "torchvision:resnet50" in family_models("torchvision")
    assert "torchvision:maskrcnn_resnet50_fpn" not in family_models("torchvision")  # classification only
    assert "timm:convnext_nano" in family_models("timm", pretrained=True)


def test_arch_params_pass_to_the_constructor_and_a_bad_one_is_named() -> None:
    assert model_params("timm:resnet10t")["drop_rate"] == 0.0
    assert "width_per_group" in model_params("torchvision:resnet18")
    model = build_model("timm:resnet10t", 10, 3, 32, {"drop_rate": 0.25})
    assert model.drop_rate == 0.25
    with pytest.raises(ValueError, match=r"timm:resnet10t: param 'depth' is not a parameter"):
        build_model("timm:resnet10t", 10, 3, 32, {"depth": 3})
    with pytest.raises(ValueError, match=r"param 'num_classes' is set by PathScope"):
        build_model("torchvision:resnet18", 10, 3, 32, {"num_classes": 5})
    data = tiny_spec_dict(student={"arch": "timm:resnet10t", "arch_params": {"depth": 3}}, teachers=[], paths=[])
    (error,) = validate_spec(parse_spec(data))
    assert error.startswith("student.arch_params: ") and "'depth'" in error


@pytest.mark.parametrize("arch", ["torchvision:resnet18", "torchvision:mobilenet_v3_small", "timm:resnet10t",
                                  "timm:mobilenetv3_small_100"])
def test_spots_are_stages_pool_and_logits_and_tap_the_forward(arch: str) -> None:
    spots = list_spots(arch, CIFAR, 10)
    names = [s.name for s in spots]
    assert names == ["stage1", "stage2", "stage3", "stage4", "stage5", "pool", "fc"]
    assert [s.shape[1] for s in spots[:5]] == [16, 8, 4, 2, 1]  # one stage per halving of 32x32
    assert [s.kind for s in spots[-2:]] == ["embedding", "logits"] and spots[-1].shape == (10,)
    torch.manual_seed(0)
    model = build_model(arch, 10, *CIFAR[:2]).eval()
    tapped = TappedModel(model, arch, names).eval()
    x = torch.randn(2, *CIFAR)
    with torch.no_grad():
        out = tapped(x)
        assert torch.allclose(out["fc"], model(x), atol=1e-5)
    for spot in spots:
        assert tuple(out[spot.name].shape) == (2, *spot.shape), spot.name


def test_transformer_spots_at_224() -> None:
    spots = {s.name: s for s in list_spots("timm:vit_tiny_patch16_224", (3, 224, 224), 10)}
    assert spots["stage1"].shape == (197, 192) and spots["pool"].shape == (192,) and spots["fc"].shape == (10,)


def test_spots_cli_lists_a_timm_model_at_224() -> None:
    result = engine_cli("spots", "timm:resnet18", "--input", "3x224x224")
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == ["stage1", "feature_map", "64x112x112"]
    assert lines[-2:] == [["pool", "embedding", "512"], ["fc", "logits", "10"]]


def test_family_models_cut_into_segments_at_their_spots() -> None:
    from engine.models.segments import cut_at_spots

    model = build_model("timm:resnet10t", 10, 3, 32).eval()
    segments = cut_at_spots(model, "timm:resnet10t", ["stage2", "stage4"])
    x = torch.randn(2, *CIFAR)
    with torch.no_grad():
        assert torch.allclose(segments.run(x), model(x), atol=1e-5)


def test_other_input_channels_build() -> None:
    for arch in ("torchvision:resnet18", "timm:resnet10t"):
        model = build_model(arch, 10, 1, 8).eval()
        assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_pretrained_download_while_offline_names_the_file_and_folder(offline: Path) -> None:
    data = tiny_spec_dict(paths=[])
    data["teachers"] = [{"id": "t", "arch": "torchvision:resnet18", "source": {"kind": "pretrained"}}]
    data["student"] = {"arch": "timm:resnet10t", "source": {"kind": "pretrained"}}
    student, teacher = validate_spec(parse_spec(data))
    assert teacher.startswith("teachers[0].source: torchvision:resnet18: the published weights are not on this "
                              "machine")
    assert f"put resnet18-f37072fd.pth (from https://download.pytorch.org/models/resnet18-f37072fd.pth) into " \
           f"{offline / 'torch' / 'hub' / 'checkpoints'}/" in teacher
    assert "source.path" in teacher
    assert student.startswith("student.source: timm:resnet10t: the published weights are not on this machine")
    assert "model.safetensors from https://huggingface.co/timm/resnet10t.c3_in1k" in student
    assert str(offline / "hf" / "hub" / "models--timm--resnet10t.c3_in1k") in student


def test_cached_published_weights_are_used_and_a_teacher_head_of_another_size_is_refused(offline: Path) -> None:
    from engine.models.weights import weights_file

    # torch hub layout: <TORCH_HOME>/hub/checkpoints/<file name of the URL>
    hub = offline / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.manual_seed(0)
    published = build_model("torchvision:mobilenet_v3_small", 1000, 3, 224)
    torch.save(published.state_dict(), hub / "mobilenet_v3_small-047dcff4.pth")
    # Hugging Face layout: <HF_HOME>/hub/models--org--name/{refs/main, snapshots/<commit>/model.safetensors}
    repo = offline / "hf" / "hub" / "models--timm--resnet10t.c3_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    timm_state = build_model("timm:resnet10t", 1000, 3, 224).state_dict()
    save_file({k: v.contiguous() for k, v in timm_state.items()}, str(repo / "snapshots" / "0123abcd" / "model.safetensors"))
    assert weights_file("timm:resnet10t", PretrainedSource(), Path) == repo / "snapshots" / "0123abcd" / "model.safetensors"

    data = tiny_spec_dict(paths=[])  # digits: 10 classes, 1 channel, 8x8
    data["teachers"] = [{"id": "tv", "arch": "torchvision:mobilenet_v3_small", "source": {"kind": "pretrained"}},
                        {"id": "tm", "arch": "timm:resnet10t", "source": {"kind": "pretrained"}}]
    data["student"] = {"arch": "torchvision:mobilenet_v3_small", "source": {"kind": "pretrained"}}
    errors = validate_spec(parse_spec(data))
    assert errors == [
        f"teachers[0].source: the published weights of torchvision:mobilenet_v3_small "
        f"({hub / 'mobilenet_v3_small-047dcff4.pth'}) has a 1000-class head (classifier.3) but the dataset has "
        f"10 classes",
        f"teachers[1].source: the published weights of timm:resnet10t "
        f"({repo / 'snapshots' / '0123abcd' / 'model.safetensors'}) has a 1000-class head (fc) but the dataset has "
        f"10 classes"]

    # The student takes them: RGB stem summed for digits' one channel, a fresh 10-class head.
    from engine.data import load_dataset
    from engine.runner import build_learner
    from engine.train import NullReporter

    spec = parse_spec(tiny_spec_dict(teachers=[], paths=[], student=data["student"]))
    reporter = NullReporter()
    learner = build_learner(spec, load_dataset(spec.dataset), {}, torch.device("cpu"), None, reporter)
    student = learner.student.model
    assert torch.allclose(student.features[0][0].weight, published.features[0][0].weight.sum(1, keepdim=True))
    assert torch.equal(student.features[3].block[0][0].weight, published.features[3].block[0][0].weight)
    assert student.classifier[3].out_features == 10
    messages = [m for _, m in reporter.events]
    assert any("published weights of torchvision:mobilenet_v3_small" in m for m in messages)
    assert any("head replaced" in m and "1000-class" in m for m in messages), messages


@pytest.mark.skipif(not CIFAR_JPG.is_dir(), reason="../shared/data absent")
def test_family_teachers_and_student_train_on_cifar_jpegs(tmp_path: Path, home: Path, offline: Path) -> None:
    from engine.explain.models import load_model
    from engine.runner import execute_run
    from engine.train import NullReporter

    root = tmp_path / "cifar"
    for split, count in (("train", 5), ("test", 2)):  # 70 images
        for folder in sorted((CIFAR_JPG / split).iterdir()):
            (root / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.glob("*.jpg"))[:count]:
                shutil.copy(image, root / split / folder.name / image.name)
    # Local files of "published" weights stand in for downloads: a 10-class teacher, a 1000-class student.
    torch.manual_seed(1)
    teacher_file = tmp_path / "resnet18-cifar.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in build_model("torchvision:resnet18", 10, 3, 32).state_dict().items()},
              str(teacher_file))
    student_file = tmp_path / "mobilenet_v3_small-imagenet.pth"
    torch.save({"state_dict": build_model("torchvision:mobilenet_v3_small", 1000, 3, 224).state_dict()}, student_file)
    data = {
        "name": "families",
        "dataset": {"name": "image_folder", "root": str(root), "batch_size": 16, "normalize": "imagenet"},
        "teachers": [
            {"id": "t10", "arch": "timm:resnet10t", "source": {"kind": "train", "epochs": 1}},
            {"id": "r18", "arch": "torchvision:resnet18", "source": {"kind": "pretrained", "path": str(teacher_file)}},
        ],
        "student": {"arch": "torchvision:mobilenet_v3_small",
                    "source": {"kind": "pretrained", "path": str(student_file)}},
        "paths": [
            {"id": "kd", "teacher": "t10", "distiller": "kd", "teacher_spot": "fc", "student_spot": "fc"},
            {"id": "hint", "teacher": "r18", "distiller": "fitnet", "teacher_spot": "stage3", "student_spot": "stage3"},
        ],
        "epochs": 2, "seed": 0, "log_every": 2,
    }
    spec = parse_spec(data)
    assert validate_spec(spec, home) == []
    reporter = NullReporter()
    result = execute_run(spec, "fam", home, reporter)
    assert 0.0 <= result["test_acc"] <= 1.0 and set(result["teacher_test_acc"]) == {"t10", "r18"}
    messages = [m for _, m in reporter.events]
    assert any(m.startswith("teacher r18: loaded the published weights of torchvision:resnet18") for m in messages)
    assert any(m.startswith("student: head replaced") and "1000-class" in m for m in messages), messages
    final = torch.load(home / "runs" / "fam" / "checkpoints" / "final.pt", weights_only=True)
    assert final["arch"] == "torchvision:mobilenet_v3_small"
    # The attribution models rebuild the pretrained teacher through the same loader.
    teacher = load_model(home, "fam", spec, "teacher:r18", "final", CIFAR, 10)
    x = torch.randn(2, *CIFAR)
    reference = build_model("torchvision:resnet18", 10, 3, 32).eval()
    reference.load_state_dict({k.removeprefix("module."): v for k, v in
                               __import__("safetensors.torch").torch.load_file(str(teacher_file)).items()})
    with torch.no_grad():
        assert torch.allclose(teacher(x), reference(x), atol=1e-5)
