"""Planted-defect teachers: deliberately broken teachers for teaching and for proving the detector.

Most defects change only what an inline teacher is trained on (never the student's data):
- permuted_labels: trained on a fixed permutation of the classes (no class keeps its label);
- noisy_labels: a share `noise` of the training labels replaced by another class;
- inverted_input: trained on negated images, then asked about normal ones;
- rotated_input: trained on images turned a quarter turn (counter-clockwise), then asked about upright
  ones: an input-domain shift that keeps every pixel's value;
- under_trained: one epoch over a share `strength` of the training split (default a tenth);
- random_init: not trained at all;
- shortcut: a share `strength` (default all) of its training images carry a class-coded bright patch
  on the image border (class c lights border cell c, 2x2 pixels on digits); the teacher learns to read
  the patch, which the student's images never have, so it is weaker on clean images and its features and
  logits encode a cue the student cannot see.

Two more change the trained teacher's weights afterwards (`apply_model_defect`), seeded by the teacher's seed:
- scaled_logits: the final linear layer's weight and bias multiplied by `strength` (default 20), so the
  logits are exactly `strength` x the clean teacher's: the same predictions and accuracy, but soft
  targets as sharp as the clean teacher's at a temperature `strength` times lower (KD at T=4 and strength
  20 sees the clean logits at T=0.2, nearly one-hot) and logit-matching targets `strength` times larger;
- corrupted_features (small_cnn only): every conv stage's output channel c multiplied by a seeded gain
  strength**u_c, u_c uniform in [-1, 1] (default strength 30, so gains in [1/30, 30]), through its
  BatchNorm's weight and bias; the next stage's conv (or the final linear layer) divides its input
  channel c by the same gain. ReLU and max/average pooling commute with a positive per-channel gain, so
  the logits and accuracy are unchanged (up to rounding), while every feature tap (conv1, conv2, ...)
  delivers channels on wildly different scales: an AT path then distils an attention map dominated by a
  few arbitrary channels, and a FitNet path regresses onto features whose large channels dominate its loss.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from engine.data.bundle import DataBundle, Split

# Appended to, never reordered: a defect's index seeds its generator.
DEFECTS = ("none", "permuted_labels", "noisy_labels", "inverted_input", "under_trained", "random_init",
           "scaled_logits", "corrupted_features", "shortcut", "rotated_input")
#: defects applied to the trained weights (apply_model_defect) rather than to the training data
MODEL_DEFECTS = ("scaled_logits", "corrupted_features")
UNDER_TRAINED_SHARE = 0.1
#: `strength` when the spec leaves it unset, and the range it must lie in, per defect that reads it
STRENGTH = {"under_trained": (UNDER_TRAINED_SHARE, 0.0, 1.0), "shortcut": (1.0, 0.0, 1.0),
            "scaled_logits": (20.0, 0.0, 1000.0), "corrupted_features": (30.0, 1.0, 1000.0)}


def defect_strength(defect: str, strength: float | None) -> float | None:
    """The strength a defect uses: the spec's value (checked against the defect's range) or its default."""
    if defect not in STRENGTH:
        return None
    default, low, high = STRENGTH[defect]
    value = default if strength is None else float(strength)
    if not low < value <= high:
        raise ValueError(f"defect {defect}: strength must lie in ({low:g}, {high:g}], got {value:g}")
    return value


def derangement(num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of the classes with no fixed point (every class gets another's label)."""
    while True:
        perm = torch.randperm(num_classes, generator=generator)
        if num_classes < 2 or not (perm == torch.arange(num_classes)).any():
            return perm


def _flip_labels(y: torch.Tensor, share: float, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(y), generator=generator) < share
    offset = torch.randint(1, num_classes, (len(y),), generator=generator)  # never the true class
    return torch.where(flip, (y + offset) % num_classes, y)


def _in_memory(train: Split, defect: str) -> torch.Tensor:
    if train.streamed:  # a streamed split can only be negated on the fly (DiskImages.__neg__)
        raise ValueError(f"defect {defect} needs the training images in memory (set the dataset's stream: false)")
    return train.x


def rotated_images(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images turned a quarter turn counter-clockwise (square images keep their shape)."""
    return torch.rot90(x, 1, dims=(2, 3))


def _border_cells(size: int, patch: int) -> list[tuple[int, int]]:
    """Top-left corners of the patch-sized cells on the image border, clockwise from the top-left."""
    n = size // patch
    ring = [(0, j) for j in range(n)] + [(i, n - 1) for i in range(1, n)]
    ring += [(n - 1, j) for j in range(n - 2, -1, -1)] + [(i, 0) for i in range(n - 2, 0, -1)]
    return [(i * patch, j * patch) for i, j in ring]


def shortcut_images(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Copies of the images with the shortcut patch of their class: border cell y set to the brightest value
    of the images given (a patch of side max(2, size // 8): 2x2 on 8x8 digits, 3x3 on 28x28 images)."""
    size = x.shape[-1]
    patch = max(2, size // 8)
    cells = _border_cells(size, patch)
    out = x.clone()
    bright = x.amax()
    for label in y.unique().tolist():
        top, left = cells[label % len(cells)]
        rows = (y == label).nonzero().squeeze(1)
        out[rows, :, top:top + patch, left:left + patch] = bright
    return out


def _shortcut_split(train: Split, share: float, generator: torch.Generator) -> Split:
    x = _in_memory(train, "shortcut")
    stamped = torch.rand(len(train), generator=generator) < share
    x = torch.where(stamped[:, None, None, None], shortcut_images(x, train.y), x)
    return dataclasses.replace(train, x=x)


def defective_train_split(bundle: DataBundle, defect: str, noise: float, seed: int,
                          strength: float | None = None) -> Split:
    """The training split an inline teacher with this defect learns from (the split itself for the model defects)."""
    train = bundle.train
    generator = torch.Generator().manual_seed(seed * 31 + DEFECTS.index(defect))
    if defect == "permuted_labels":
        return dataclasses.replace(train, y=derangement(bundle.num_classes, generator)[train.y])
    if defect == "noisy_labels":
        return dataclasses.replace(train, y=_flip_labels(train.y, noise, bundle.num_classes, generator))
    if defect == "inverted_input":
        return dataclasses.replace(train, x=-train.x)
    if defect == "rotated_input":
        return dataclasses.replace(train, x=rotated_images(_in_memory(train, defect)))
    if defect == "shortcut":
        return _shortcut_split(train, defect_strength(defect, strength), generator)
    if defect == "under_trained":
        share = defect_strength(defect, strength)
        keep = torch.randperm(len(train), generator=generator)[: max(1, int(len(train) * share))]
        return train.take(keep)  # a streamed split stays on disk
    return train


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("scaled_logits needs a model whose logits come from a final nn.Linear")
    return linears[-1]


def scale_logits(model: nn.Module, scale: float) -> None:
    """Multiply the last linear layer's weight and bias by `scale`: logits become exactly scale x logits
    (for models whose output is that layer's, as every registered classifier's is)."""
    fc = _last_linear(model)
    with torch.no_grad():
        fc.weight.mul_(scale)
        if fc.bias is not None:
            fc.bias.mul_(scale)


def corrupt_features(model: nn.Module, strength: float, generator: torch.Generator) -> None:
    """Seeded per-channel gains on every small_cnn stage's output, undone by the layer that reads it."""
    stages = [getattr(model, f"conv{i + 1}", None) for i in range(getattr(model, "num_stages", 0))]
    if not stages or not hasattr(model, "fc"):
        raise ValueError("corrupted_features is defined for small_cnn teachers only")
    with torch.no_grad():
        for i, stage in enumerate(stages):
            bn = next(m for m in stage if isinstance(m, nn.BatchNorm2d))
            gain = strength ** (2 * torch.rand(bn.num_features, generator=generator) - 1)
            gain = gain.to(bn.weight.device)
            bn.weight.mul_(gain)
            bn.bias.mul_(gain)
            # The reader of this stage: the next stage's conv (max pooling first commutes with a positive
            # gain) or, after the last stage, the final linear layer (average pooling is linear).
            if i + 1 < len(stages):
                conv = next(m for m in stages[i + 1] if isinstance(m, nn.Conv2d))
                conv.weight.div_(gain[None, :, None, None])
            else:
                model.fc.weight.div_(gain[None, :])


def apply_model_defect(model: nn.Module, defect: str, strength: float | None, seed: int) -> None:
    """Plant a model defect (MODEL_DEFECTS) in a trained teacher, in place; other defects leave it alone."""
    if defect not in MODEL_DEFECTS:
        return
    value = defect_strength(defect, strength)
    generator = torch.Generator().manual_seed(seed * 31 + DEFECTS.index(defect))
    if defect == "scaled_logits":
        scale_logits(model, value)
    else:
        corrupt_features(model, value, generator)
