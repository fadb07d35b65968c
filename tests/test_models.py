"""engine.models: the zoo, spot taps and checkpoint loading."""
from __future__ import annotations

import pytest
import torch

from engine.models import MODELS, build_model
from engine.models.checkpoint import CheckpointError, load_weights
from engine.models.spots import SpotInfo, TappedModel, list_spots

SHAPES = [(1, 8, 8), (3, 32, 32)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("arch", MODELS.names())
def test_model_builds_and_spot_shapes_match_forward(arch, shape):
    spots = list_spots(arch, shape, num_classes=7)
    names = [s.name for s in spots]
    assert "fc" in names and "pool" in names
    model = build_model(arch, 7, shape[0], shape[1], {})
    tapped = TappedModel(model, arch, names).eval()
    with torch.no_grad():
        out = tapped(torch.randn(2, *shape))
        logits = model(torch.randn(2, *shape))
    assert logits.shape == (2, 7)
    for spot in spots:
        assert tuple(out[spot.name].shape[1:]) == spot.shape, spot.name
    kinds = {s.name: s.kind for s in spots}
    assert kinds["fc"] == "logits" and kinds["pool"] == "embedding"
    assert spots[-1].shape == (7,)


def test_resnet20_spots_exactly():
    assert list_spots("resnet20", (3, 32, 32), 10) == [
        SpotInfo("conv1", "feature_map", (16, 32, 32)),
        SpotInfo("layer1", "feature_map", (16, 32, 32)),
        SpotInfo("layer2", "feature_map", (32, 16, 16)),
        SpotInfo("layer3", "feature_map", (64, 8, 8)),
        SpotInfo("pool", "embedding", (64,)),
        SpotInfo("fc", "logits", (10,)),
    ]


def test_cifar_resnet_sizes_and_checkpoint_names():
    resnet56 = build_model("resnet56", 10, 3, 32, {})
    assert 0.84e6 < sum(p.numel() for p in resnet56.parameters()) < 0.87e6
    keys = set(build_model("resnet20", 10, 3, 32, {}).state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer3.2.bn2.bias", "linear.weight"} <= keys
    assert not any("shortcut" in k for k in keys)  # option A adds no parameters
    assert len([k for k in keys if k.endswith("conv2.weight")]) == 9  # 3 blocks x 3 stages


def test_build_model_param_checks():
    assert [s.name for s in list_spots("mlp", (1, 8, 8), 10, {"hidden": [32, 16, 8]})][:3] == ["fc1", "fc2", "fc3"]
    with pytest.raises(ValueError, match="'depth'"):
        build_model("resnet20", 10, 3, 32, {"depth": 3})
    with pytest.raises(ValueError, match="'hidden'"):
        build_model("mlp", 10, 1, 8, {"hidden": []})
    with pytest.raises(ValueError, match="'width'"):
        build_model("small_cnn", 10, 1, 8, {"width": -1})


def test_list_spots_leaves_global_rng_alone():
    torch.manual_seed(0)
    list_spots("small_cnn", (1, 28, 28), 3, {"width": 5})
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(1))


def test_tapped_model_shares_parameters_and_returns_spots():
    torch.manual_seed(0)
    model = build_model("resnet8", 10, 1, 8, {})
    tapped = TappedModel(model, "resnet8", ["layer2", "pool"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = tapped(torch.randn(4, 1, 8, 8))
    assert set(out) == {"layer2", "pool", "fc"}
    loss = torch.nn.functional.cross_entropy(out["fc"], torch.arange(4)) + out["layer2"].pow(2).mean()
    loss.backward()
    torch.optim.SGD(tapped.parameters(), lr=0.1).step()
    assert not torch.equal(before["linear.weight"], model.state_dict()["linear.weight"])
    assert not torch.equal(before["conv1.weight"], model.state_dict()["conv1.weight"])
    assert set(tapped.state_dict()) == {f"model.{k}" for k in model.state_dict()}


def test_tapped_model_follows_train_and_eval():
    model = build_model("small_cnn", 10, 1, 8, {})
    tapped = TappedModel(model, "small_cnn", [])
    tapped.eval()
    assert not model.training
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(tapped(x)["fc"], model(x))  # eval mode: BN uses running statistics in both
    tapped.train()
    assert model.training and model.conv1[1].training


def test_tapped_model_rejects_unknown_spot():
    model = build_model("resnet20", 10, 3, 32, {})
    with pytest.raises(ValueError, match=r"'layer4'.*conv1, layer1, layer2, layer3, pool, fc"):
        TappedModel(model, "resnet20", ["layer4"])


def test_checkpoint_with_module_prefix_loads(tmp_path):
    source = build_model("resnet20", 10, 3, 32, {})
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "resnet20.th"
    torch.save({"state_dict": state, "best_prec1": 91.7}, path)
    target = build_model("resnet20", 10, 3, 32, {})
    load_weights(target, path)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in target.state_dict().items())


def test_checkpoint_mismatch_names_parameters_and_shapes(tmp_path):
    path = tmp_path / "resnet32_c100.pt"
    torch.save(build_model("resnet32", 100, 3, 32, {}).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model("resnet20", 10, 3, 32, {}), path)
    message = str(err.value)
    assert "linear.weight: checkpoint (100, 64) vs model (10, 64)" in message
    assert "unexpected keys" in message and "layer1.3.conv1.weight" in message
    assert "... and" in message  # long lists are capped
    assert len(message.splitlines()) < 30


def test_non_checkpoint_file_is_reported(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("this is not a checkpoint")
    model = build_model("mlp", 10, 1, 8, {})
    with pytest.raises(CheckpointError, match="notes.txt"):
        load_weights(model, path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(model, tmp_path / "absent.pt")
    torch.save({"epoch": 3}, tmp_path / "no_weights.pt")
    with pytest.raises(CheckpointError, match="no state_dict"):
        load_weights(model, tmp_path / "no_weights.pt")
