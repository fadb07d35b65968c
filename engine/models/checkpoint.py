"""Loading weights from checkpoint files, with mismatches reported by parameter name.

Accepted files (``CHECKPOINT_EXTENSIONS``): ``.pt .pth .th .bin`` through ``torch.load(weights_only=True)``
(a checkpoint is data: unpickling never runs code from the file) and ``.safetensors`` through the
safetensors library. The state dict may sit under the usual keys (``state_dict``, ``model``, ``net``,
``module``, also nested) and carry the ``module.`` prefix of DataParallel/DDP or a ``model.`` prefix of a
wrapper. When a checkpoint does not fit the chosen architecture, the message names the registered
architectures it does fit.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

#: file types the uploader and the CLI accept as checkpoints
CHECKPOINT_EXTENSIONS = (".pt", ".pth", ".th", ".bin", ".safetensors")
WRAPPER_KEYS = ("state_dict", "model", "net", "module", "model_state", "model_state_dict", "network")
PREFIXES = ("module.", "model.")
MAX_LINES = 10
MAX_DEPTH = 3
HeadRule = Literal["keep", "replace"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the model; the message names file and parameters."""


# ------------------------------------------------------------------ reading
def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict in a checkpoint file (unwrapped from its container; key prefixes kept)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix.lower() not in CHECKPOINT_EXTENSIONS:
        raise CheckpointError(f"{path}: {path.suffix or 'no extension'} is not a checkpoint file type "
                              f"(accepted: {' '.join(CHECKPOINT_EXTENSIONS)})")
    return _state_dict(_read(path), path)


def _read(path: Path) -> Any:
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{path} is not a readable safetensors file ({err})") from err
    try:
        # weights_only: a checkpoint is data; never let unpickling run code from the file.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types (pickle, zip, runtime) for foreign files
        raise CheckpointError(f"{path} is not a PyTorch checkpoint that can be loaded safely ({err})") from err


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _find_state_dict(obj: Any, depth: int = 0) -> dict[str, Tensor] | None:
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping) and depth < MAX_DEPTH:
        for key in WRAPPER_KEYS:
            found = _find_state_dict(obj.get(key), depth + 1)
            if found is not None:
                return found
    return None


def _state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    """The state_dict inside ``obj``: the object itself, or under one of WRAPPER_KEYS (possibly nested)."""
    found = _find_state_dict(obj)
    if found is None:
        raise CheckpointError(
            f"{path} holds no state_dict (expected a dict of tensors, or one under {', '.join(WRAPPER_KEYS)})"
        )
    return found


def _variants(state: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """The state as saved, then with wrapper prefixes ('module.', 'model.') stripped one at a time."""
    variants = [state]
    while True:
        prefix = next((p for p in PREFIXES if all(k.startswith(p) for k in variants[-1])), None)
        if prefix is None:
            return variants
        variants.append({k[len(prefix):]: v for k, v in variants[-1].items()})


def _best_variant(model_keys: set[str], state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The variant sharing the most keys with the model (the first on a tie, so names are stripped only when needed)."""
    variants = _variants(state)
    return max(variants, key=lambda v: (len(model_keys & v.keys()), -variants.index(v)))


# ------------------------------------------------------------------ mismatch reports
def _section(title: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    shown = [f"  {line}" for line in lines[:MAX_LINES]]
    if len(lines) > MAX_LINES:
        shown.append(f"  ... and {len(lines) - MAX_LINES} more")
    return [f"{title} ({len(lines)}):", *shown]


def _mismatches(model_state: dict[str, Tensor], state: dict[str, Tensor]) -> list[str]:
    # Old checkpoints predate BatchNorm's num_batches_tracked; load_state_dict fills it in.
    missing = [k for k in model_state if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in model_state]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(model_state[k].shape)}"
        for k in model_state
        if k in state and state[k].shape != model_state[k].shape
    ]
    return _section("shape mismatches", shapes) + _section("missing keys", missing) + _section("unexpected keys", unexpected)


# ------------------------------------------------------------------ loading
@dataclass(frozen=True)
class HeadChange:
    """The checkpoint's classifier did not match the dataset's classes and was left at its fresh initialisation."""

    layers: tuple[str, ...]
    checkpoint_classes: int
    model_classes: int

    def describe(self) -> str:
        return (f"head replaced: the weights' {self.checkpoint_classes}-class classifier "
                f"({', '.join(self.layers)}) became a new {self.model_classes}-class one")


def load_weights(model: nn.Module, path: str | Path, arch: str | None = None) -> None:
    """Load a checkpoint file into ``model`` or raise CheckpointError saying what does not fit (and, with
    ``arch``, which registered architectures the file does fit)."""
    load_state(model, read_state_dict(path), f"checkpoint {path}", arch=arch)


def load_state(model: nn.Module, state: dict[str, Tensor], what: str, arch: str | None = None,
               head: HeadRule = "keep", adapt_input: bool = False) -> HeadChange | None:
    """Load ``state`` into ``model``; every key and shape must fit, except as allowed:

    - ``head="replace"``: a classifier with another class count is not loaded (the model keeps its own, freshly
      initialised head) and the change is returned; with ``"keep"`` it is refused naming both class counts.
    - ``adapt_input``: RGB input-conv weights are adapted to the model's input channels (published weights).
    """
    model_state = model.state_dict()
    state = dict(_best_variant(set(model_state), state))
    if adapt_input:
        _adapt_input_conv(model, state)
    change = _head_change(model, arch, state) if arch is not None else None
    if change is not None:
        if head == "keep":
            raise CheckpointError(f"{what} has a {change.checkpoint_classes}-class head "
                                  f"({', '.join(change.layers)}) but the dataset has {change.model_classes} classes")
        for layer in change.layers:
            for key in [k for k in state if k.startswith(layer + ".")]:
                del state[key]
    problems = _mismatches(model_state, state)
    if change is not None:  # the dropped head's keys are meant to stay as initialised
        problems = _mismatches({k: v for k, v in model_state.items()
                                if not any(k.startswith(layer + ".") for layer in change.layers)}, state)
    if problems:
        lines = [f"{what} does not fit {arch or 'the model'}:", *problems]
        if arch is not None:
            fits = fitting_architectures(state)
            lines.append(f"it fits: {', '.join(fits)}" if fits else "it fits none of the registered architectures")
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state, strict=False)
    return change


def _head_change(model: nn.Module, arch: str, state: dict[str, Tensor]) -> HeadChange | None:
    from engine.models.families import head_modules

    layers = tuple(head_modules(model, arch))
    for layer in layers:
        key = f"{layer}.weight"
        ours = model.get_submodule(layer).weight
        if key in state and state[key].ndim == ours.ndim and state[key].shape[1:] == ours.shape[1:] \
                and state[key].shape[0] != ours.shape[0]:
            return HeadChange(layers, int(state[key].shape[0]), int(ours.shape[0]))
    return None


def _adapt_input_conv(model: nn.Module, state: dict[str, Tensor]) -> None:
    from engine.models.families import adapt_input_conv, first_conv

    name = first_conv(model)
    key = f"{name}.weight"
    if name is None or key not in state:
        return
    ours = model.get_submodule(name).weight
    theirs = state[key]
    if theirs.ndim == 4 and theirs.shape[1] != ours.shape[1] and theirs.shape[0] == ours.shape[0]:
        state[key] = adapt_input_conv(theirs, ours.shape[1])


# ------------------------------------------------------------------ which architectures a checkpoint fits
@lru_cache(maxsize=None)
def _reference(arch: str) -> tuple[dict[str, tuple[int, ...]], frozenset[str], str | None]:
    """(key -> shape at 10 classes, 3 channels, 32x32; the head's keys; the first parameter's key)."""
    from engine.models import build_model
    from engine.models.families import head_modules

    with torch.random.fork_rng(devices=[]):  # describing a file must not change what a run draws next
        model = build_model(arch, 10, 3, 32, {})
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    heads = frozenset(k for layer in head_modules(model, arch) for k in shapes if k.startswith(layer + "."))
    first = next((k for k in shapes if k.endswith("weight")), None)
    return shapes, heads, first


def _fits(arch: str, state: dict[str, Tensor]) -> int | None:
    """The class count ``state`` has as ``arch`` (any class count and input channels), or None if it does not fit."""
    shapes, heads, first = _reference(arch)
    keys = {k for k in state if not k.endswith("num_batches_tracked")}
    if keys != shapes.keys():
        return None
    classes = None
    for key, shape in shapes.items():
        theirs = tuple(state[key].shape)
        if len(theirs) != len(shape):
            return None
        differ = [i for i, (a, b) in enumerate(zip(theirs, shape)) if a != b]
        if key in heads and differ in ([], [0]):
            classes = theirs[0] if key.endswith("weight") else classes
        elif key == first and differ in ([], [1]):
            continue  # input channels (or, for an MLP, the flattened image size)
        elif differ:
            return None
    return classes if classes is not None else 10


def fitting_architectures(state: dict[str, Tensor]) -> list[str]:
    """Registered architectures (not family models) this state dict fits, as 'resnet56 (10 classes)'."""
    from engine.models import MODELS

    found = []
    for arch in MODELS.names():
        for variant in _variants(state):
            try:
                classes = _fits(arch, variant)
            except (TypeError, ValueError, RuntimeError):
                classes = None
            if classes is not None:
                found.append(f"{arch} ({classes} classes)")
                break
    return found


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    tensors: int
    parameters: int
    fits: list[str]

    def describe(self) -> str:
        fits = ", ".join(self.fits) if self.fits else "none of the registered architectures (a torchvision: or " \
                                                       "timm: model may still take it)"
        return f"{Path(self.path).name}: {self.tensors} tensors, {self.parameters:,} values; fits {fits}"


def describe_checkpoint(path: str | Path) -> CheckpointInfo:
    """What a checkpoint file holds and which registered architectures it fits (CheckpointError if unreadable)."""
    state = read_state_dict(path)
    return CheckpointInfo(str(path), len(state), int(sum(v.numel() for v in state.values())),
                          fitting_architectures(state))

