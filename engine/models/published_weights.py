"""Published ("pretrained") weights of torchvision: and timm: models, read only from the libraries' download
caches (torch hub, Hugging Face) or from a local file: nothing here touches the network. ``pretrained_file``
names the missing file and the folder to put it in when the weights are absent."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from engine.models.families import FamilyError, split_name


def torch_hub_checkpoints() -> Path:
    """torch hub's download folder for weight files (follows TORCH_HOME at call time)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache (HF_HUB_CACHE, or HF_HOME/hub), read at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def pretrained_file(arch: str) -> Path:
    """The cached file of the model's published weights; FamilyError naming the file and folder when absent."""
    family, name = split_name(arch)
    if not family:
        raise FamilyError(f"{arch} has no published weights: pretrained weights exist for torchvision:<name> "
                          f"and timm:<name> models; use a checkpoint source for other architectures")
    if family == "torchvision":
        return _torchvision_file(arch, name)
    return _timm_file(arch, name)


def _torchvision_file(arch: str, name: str) -> Path:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError, AttributeError):
        weights = None
    if weights is None:
        raise FamilyError(f"{arch} has no published weights in torchvision")
    file = weights.url.rsplit("/", 1)[-1]
    folder = torch_hub_checkpoints()
    if (folder / file).is_file():
        return folder / file
    raise FamilyError(f"{arch}: the published weights are not on this machine and are not downloaded here: "
                      f"put {file} (from {weights.url}) into {folder}/, or set source.path to a local copy")


def _timm_file(arch: str, name: str) -> Path:
    import timm.models

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise FamilyError(f"{arch} has no published weights in timm")
    places: list[str] = []
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for file in files:
            found = try_to_load_from_cache(cfg.hf_hub_id, file, cache_dir=str(hf_hub_cache()))
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
        repo_dir = hf_hub_cache() / f"models--{cfg.hf_hub_id.replace('/', '--')}"
        places.append(f"{files[0]} from https://huggingface.co/{cfg.hf_hub_id} into the Hugging Face cache "
                      f"({repo_dir}, as `huggingface-cli download {cfg.hf_hub_id} {files[0]}` lays it out)")
    if cfg.url and not cfg.custom_load:
        file = cfg.url.rsplit("/", 1)[-1]
        if (torch_hub_checkpoints() / file).is_file():
            return torch_hub_checkpoints() / file
        places.append(f"{file} (from {cfg.url}) into {torch_hub_checkpoints()}/")
    if not places:
        raise FamilyError(f"{arch}: timm's weights for it ({cfg.url}) need a custom loader; "
                          f"set source.path to a PyTorch or safetensors copy of them")
    raise FamilyError(f"{arch}: the published weights are not on this machine and are not downloaded here: put "
                      f"{' or '.join(places)}, or set source.path to a local copy (.safetensors, .pth, .bin)")


def filter_pretrained(arch: str, model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's own conversion of published weights for this model (resampled position embeddings, old layouts)."""
    if split_name(arch)[0] != "timm":
        return state
    filter_fn: Callable | None = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state
    try:
        return filter_fn(dict(state), model)
    except Exception:  # noqa: BLE001 - a filter written for another layout: the state is then reported as it is
        return state
