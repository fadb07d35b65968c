"""Model zoo: builders registered by name, each with its named spots (taps on fx graph nodes).

A builder has the signature ``(num_classes, in_channels, image_size, **params) -> nn.Module``.
Its ``spots`` meta maps user-facing spot names to torch.fx node names, in model order; it is
either a dict or, when the layers depend on params, a function of the built model.
"""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

# Imported for their registration side effect: each registers its builders in engine/models/registry.py.
from engine.models import cifar_resnet, mlp, small_cnn, torchvision_models  # noqa: F401
from engine.models import cifar_resnet_wide, mobilenetv2, shufflenet, vgg, wrn  # noqa: F401
from engine.models import families
from engine.models.registry import MODELS

for _family in families.FAMILIES:  # torchvision:<name>, timm:<name>: resolved on first use
    MODELS.add_family(_family, families.resolve)

_FIXED_ARGS = ("num_classes", "in_channels", "image_size")


def model_params(arch: str) -> dict[str, Any]:
    """The params ``arch`` accepts, with their defaults (a family model's: its constructor's)."""
    entry = MODELS.entry(arch)
    if "params" in entry.meta:
        return dict(entry.meta["params"]())
    signature = inspect.signature(entry.obj)
    return {name: p.default for name, p in signature.parameters.items() if name not in _FIXED_ARGS}


def build_model(arch: str, num_classes: int, in_channels: int, image_size: int, params: dict | None = None) -> nn.Module:
    """Build ``arch``; an unknown or invalid param raises a ValueError naming it."""
    params = dict(params or {})
    if "params" in MODELS.entry(arch).meta:  # a family model checks its params against its constructor
        return MODELS.get(arch)(num_classes, in_channels, image_size, **params)
    accepted = model_params(arch)
    for name in params:
        if name not in accepted:
            known = ", ".join(accepted) if accepted else "none"
            raise ValueError(f"{arch}: unknown param {name!r} (accepted params: {known})")
    return MODELS.get(arch)(num_classes, in_channels, image_size, **params)


__all__ = ["MODELS", "build_model", "model_params"]
