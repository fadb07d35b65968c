"""Loading weights from checkpoint files, with mismatches reported by parameter name."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

WRAPPER_KEYS = ("state_dict", "model", "model_state")
MAX_LINES = 10


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the model; the message names file and parameters."""


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        # weights_only: a checkpoint is data; never let unpickling run code from the file.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types (pickle, zip, runtime) for foreign files
        raise CheckpointError(f"{path} is not a PyTorch checkpoint that can be loaded safely ({err})") from err


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _state_dict(obj: Any, path: Path) -> dict[str, Tensor]:
    """The state_dict inside ``obj``: the object itself, or under one of WRAPPER_KEYS."""
    if _is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if _is_state_dict(obj.get(key)):
                return dict(obj[key])
    raise CheckpointError(
        f"{path} holds no state_dict (expected a dict of tensors, or one under {', '.join(WRAPPER_KEYS)})"
    )


def _strip_module_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    # Checkpoints saved from DataParallel/DDP wrappers prefix every key with "module.".
    if all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


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


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint file into ``model`` or raise CheckpointError saying what does not fit."""
    path = Path(path)
    state = _strip_module_prefix(_state_dict(_read(path), path))
    problems = _mismatches(model.state_dict(), state)
    if problems:
        raise CheckpointError("\n".join([f"checkpoint {path} does not fit the model:", *problems]))
    model.load_state_dict(state, strict=False)
