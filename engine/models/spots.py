"""Spots: named places in a model whose outputs paths can read (feature maps, embeddings, logits).

Taps are torch.fx feature extractors (torchvision.models.feature_extraction), so models need
no hooks or code changes; a spot is just a name for one node of the traced graph.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Literal

import torch
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from engine.models import MODELS, build_model
from engine.vocabulary import LOGITS_SPOT

SpotKind = Literal["feature_map", "embedding", "logits"]


@dataclass(frozen=True)
class SpotInfo:
    name: str
    kind: SpotKind
    shape: tuple[int, ...]  # without the batch dimension


def spot_nodes(arch: str, model: nn.Module) -> dict[str, str]:
    """Spot name -> fx node name for this built model, in model order."""
    spots = MODELS.entry(arch).meta["spots"]
    return dict(spots(model) if callable(spots) else spots)


def tracer_kwargs(arch: str) -> dict[str, Any] | None:
    """Extra torch.fx tracer settings the model needs (timm's untraceable layers as leaves), or None."""
    kwargs = MODELS.entry(arch).meta.get("tracer_kwargs")
    return dict(kwargs() if callable(kwargs) else kwargs) if kwargs else None


def _kind(name: str, shape: tuple[int, ...]) -> SpotKind:
    if name == LOGITS_SPOT:
        return "logits"
    return "feature_map" if len(shape) == 3 else "embedding"


@lru_cache(maxsize=256)
def _list_spots(arch: str, input_shape: tuple[int, int, int], num_classes: int, params_json: str) -> tuple[SpotInfo, ...]:
    # Building initialises weights from the global RNG; fork it so asking for shapes never
    # changes what a seeded run draws next.
    with torch.random.fork_rng(devices=[]):
        model = build_model(arch, num_classes, input_shape[0], input_shape[1], json.loads(params_json))
    tapped = TappedModel(model, arch, spot_nodes(arch, model)).eval()
    with torch.no_grad():
        outputs = tapped(torch.zeros(2, *input_shape))
    infos = []
    for name in spot_nodes(arch, model):
        shape = tuple(outputs[name].shape[1:])
        infos.append(SpotInfo(name, _kind(name, shape), shape))
    return tuple(infos)


def list_spots(
    arch: str, input_shape: tuple[int, int, int], num_classes: int, params: dict[str, Any] | None = None
) -> list[SpotInfo]:
    """The spots of ``arch`` in model order, with shapes from a dummy forward (memoised)."""
    key = json.dumps(params or {}, sort_keys=True)
    return list(_list_spots(arch, tuple(input_shape), num_classes, key))


class TappedModel(nn.Module):
    """Wraps a model so forward returns {spot name: tensor} for the requested spots plus "fc".

    The extractor reuses the model's own submodules, so parameters are shared: training
    the tapped model trains ``.model``, whose state_dict is what gets saved.
    """

    def __init__(self, model: nn.Module, arch: str, spots: Iterable[str]) -> None:
        super().__init__()
        nodes = spot_nodes(arch, model)
        requested = list(dict.fromkeys([*spots, LOGITS_SPOT]))
        for spot in requested:
            if spot not in nodes:
                raise ValueError(f"{arch} has no spot {spot!r} (valid spots: {', '.join(nodes)})")
        self.model = model
        self.arch = arch  # segment cutting (SAKD, DFA) resolves spots through the registry entry
        self.spots = {spot: nodes[spot] for spot in requested}
        # Kept out of the module tree so state_dict()/parameters() list each weight once,
        # under .model; the extractor's leaf modules are the model's own objects.
        self.__dict__["_extractor"] = create_feature_extractor(model, return_nodes=sorted(set(self.spots.values())),
                                                               tracer_kwargs=tracer_kwargs(arch))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        # The extractor holds a train and an eval graph; follow the model's mode, however it was set.
        if self._extractor.training != self.model.training:
            self._extractor.train(self.model.training)
        outputs = self._extractor(x)
        # Several spots may share a node (mlp's pool is its last hidden layer).
        return {spot: outputs[node] for spot, node in self.spots.items()}
