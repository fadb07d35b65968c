"""Attribution maps of a run's models for chosen samples, served from the artifact cache or computed.

``RunModels`` loads a run's data and models on first use only, so a request that the cache
answers entirely touches neither.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from engine.data import DataBundle, dataset_signature, load_dataset
from engine.explain import methods
from engine.explain.cache import entry_key, explain_dir, load_entry, relative_name, save_entry
from engine.explain.models import STUDENT, arch_of, load_model, spot_layer
from engine.spec import RunSpec
from engine.runtime import resolve_device

#: samples attributed together (integrated gradients multiplies the batch by its steps)
MAP_BATCH = 32


@dataclass(frozen=True)
class MapRequest:
    """Everything but the model and sample that determines a map; params and smoothgrad resolved."""

    method: str
    params: dict[str, Any]
    smoothgrad: dict[str, Any] | None
    target: str  # "label" (the true class) or "predicted" (each model's own prediction)
    spots: dict[str, str]  # model id -> spot, for layer methods only

    def key(self, model_id: str, checkpoint: str, sample: int) -> str:
        # Teachers are frozen: their maps are shared by every checkpoint of the student.
        return entry_key({"checkpoint": checkpoint if model_id == STUDENT else "frozen", "model": model_id,
                          "method": self.method, "params": self.params, "smoothgrad": self.smoothgrad,
                          "target": self.target, "spot": self.spots.get(model_id), "sample": sample})


@dataclass(frozen=True)
class Entry:
    sample: int
    file: str  # relative to the run's folder
    arrays: dict[str, np.ndarray]
    cached: bool


class RunModels:
    """A run's spec, data and models, loaded when first needed; one student checkpoint held at a time."""

    def __init__(self, home: Path, run_id: str, spec: RunSpec) -> None:
        self.home, self.run_id, self.spec = home, run_id, spec
        self.shape, self.classes = dataset_signature(spec.dataset)
        self.device = resolve_device("auto")  # the worker's device, whatever the run trained on
        self._models: dict[str, tuple[str, nn.Module]] = {}

    @cached_property
    def bundle(self) -> DataBundle:
        return load_dataset(self.spec.dataset)

    @cached_property
    def _positions(self) -> dict[int, tuple[str, int]]:
        splits = {"train": self.bundle.train, "val": self.bundle.val, "test": self.bundle.test}
        return {int(sid): (name, pos) for name, split in splits.items() for pos, sid in enumerate(split.index.tolist())}

    def samples(self, ids: list[int]) -> tuple[Tensor, Tensor]:
        """Normalised images (N, C, H, W) and labels of the given sample ids (from any split)."""
        missing = [i for i in ids if i not in self._positions]
        if missing:
            raise ValueError(f"samples: no split of {self.bundle.name} holds sample id {missing[0]} "
                             f"(ids go up to {max(self._positions)})")
        xs, ys = [], []
        for sid in ids:
            name, pos = self._positions[sid]
            split = getattr(self.bundle, name)
            xs.append(split.x[pos])
            ys.append(split.y[pos])
        return torch.stack(xs), torch.stack(ys)

    @cached_property
    def _stats(self) -> tuple[Tensor, Tensor]:
        """Per-channel (mean, std) as (1, C, 1, 1): x_normalised = (pixel - mean) / std."""
        return (torch.tensor(self.bundle.mean).view(1, -1, 1, 1), torch.tensor(self.bundle.std).view(1, -1, 1, 1))

    @cached_property
    def inputs(self) -> methods.Inputs:
        mean, std = self._stats
        black = (-mean / std).expand(1, *self.shape).contiguous().to(self.device)
        return methods.Inputs(shape=self.shape, black=black)

    def image(self, x: Tensor) -> np.ndarray:
        """Normalised images back to [0, 1] pixels, for display next to the maps."""
        mean, std = self._stats
        return (x.cpu() * std + mean).clamp(0, 1).numpy().astype(np.float32)

    def model(self, model_id: str, checkpoint: str) -> nn.Module:
        held = self._models.get(model_id)
        if held is None or (model_id == STUDENT and held[0] != checkpoint):
            model = load_model(self.home, self.run_id, self.spec, model_id, checkpoint, self.shape, self.classes)
            held = (checkpoint, model.to(self.device))
            self._models[model_id] = held
        return held[1]

    def layer(self, model_id: str, model: nn.Module, spot: str) -> nn.Module:
        arch, params = arch_of(self.spec, model_id)
        return spot_layer(model, arch, params, spot, self.shape, self.classes, model_id)


def explain_samples(models: RunModels, model_id: str, checkpoint: str, request: MapRequest,
                    samples: list[int]) -> list[Entry]:
    """One entry per sample, in order: cached ones read back, the others computed together and cached."""
    folder = explain_dir(models.home, models.run_id)
    names = {s: f"{request.key(model_id, checkpoint, s)}.npz" for s in samples}
    missing = [s for s in samples if not (folder / names[s]).is_file()]
    computed = {}
    for start in range(0, len(missing), MAP_BATCH):
        chunk = missing[start:start + MAP_BATCH]
        for sample, arrays in zip(chunk, _compute(models, model_id, checkpoint, request, chunk)):
            save_entry(folder / names[sample], arrays)
            computed[sample] = arrays
    return [Entry(s, relative_name(names[s]), computed[s] if s in computed else load_entry(folder / names[s]),
                  cached=s not in computed) for s in samples]


def _compute(models: RunModels, model_id: str, checkpoint: str, request: MapRequest, samples: list[int]
             ) -> list[dict[str, np.ndarray]]:
    model = models.model(model_id, checkpoint)
    x, y = models.samples(samples)
    x = x.to(models.device)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1).cpu()
    predicted = probs.argmax(dim=1)
    target = y if request.target == "label" else predicted
    spot = request.spots.get(model_id)
    layer = models.layer(model_id, model, spot) if spot is not None else None
    maps = methods.attribution_maps(model, x, target.to(models.device), request.method, request.params,
                                    models.inputs, request.smoothgrad, layer)
    images = models.image(x)
    return [{"map": maps[i].numpy(), "image": images[i], "probs": probs[i].numpy().astype(np.float32),
             "label": np.int64(y[i]), "target": np.int64(target[i]), "predicted": np.int64(predicted[i]),
             "confidence": np.float32(probs[i, predicted[i]])} for i in range(len(samples))]
