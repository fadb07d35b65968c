"""Cutting models into segments at their spots (SAKD routing and DFA's rest-of-student run on these)."""
from __future__ import annotations

import pytest
import torch

from engine.models import MODELS, build_model
from engine.models.segments import SegmentError, cut_at_spots, segment_shapes
from engine.models.spots import list_spots


@pytest.mark.parametrize("arch", ["resnet20", "small_cnn", "wrn_16_2", "vgg8", "mobilenetv2", "shufflenetv2",
                                  "resnet18", "mobilenet_v3_small"])
def test_segments_chain_to_the_model_output_and_share_weights(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 10, 3, 32, {}).eval()
    spots = [s for s in list_spots(arch, (3, 32, 32), 10) if s.kind == "feature_map"]
    segments = cut_at_spots(model, arch, [s.name for s in spots])
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(segments.run(x), model(x))
    assert segment_shapes(segments, (3, 32, 32))[:-1] == [s.shape for s in spots]
    model_params = {id(p) for p in model.parameters()}
    assert {id(p) for p in segments.parameters()} <= model_params


def test_running_part_of_the_chain_continues_from_a_spot() -> None:
    model = build_model("resnet20", 10, 3, 32, {}).eval()
    segments = cut_at_spots(model, "resnet20", ["layer1", "layer2"])
    x = torch.randn(2, 3, 32, 32)
    after_layer1 = segments.run(x, 0, 1)
    torch.testing.assert_close(segments.run(after_layer1, 1), model(x))
    assert segments.names == ["layer1", "layer2", "fc"]


def test_unknown_spot_is_named() -> None:
    model = build_model("resnet20", 10, 3, 32, {})
    with pytest.raises(SegmentError, match="layer9"):
        cut_at_spots(model, "resnet20", ["layer9"])


def test_every_registered_model_can_be_cut_at_its_feature_maps() -> None:
    for arch in MODELS.names():
        model = build_model(arch, 10, 3, 32, {})
        spots = [s.name for s in list_spots(arch, (3, 32, 32), 10) if s.kind == "feature_map"]
        assert len(cut_at_spots(model, arch, spots)) == len(spots) + 1, arch
