"""Do two attribution maps point at the same pixels? Rank correlation and top-k overlap.

Both compare per-pixel importance: absolute values summed over channels, so sign conventions
(and the channel layout of Grad-CAM maps) do not matter, only where the evidence is.
"""
from __future__ import annotations

import math

import numpy as np

DEFAULT_K = 0.1


def importance(attribution: np.ndarray) -> np.ndarray:
    """(C, H, W) map -> (H*W,) per-pixel importance."""
    if attribution.ndim != 3:
        raise ValueError(f"map: expected (C, H, W), got shape {attribution.shape}")
    return np.abs(attribution.astype(np.float64)).sum(axis=0).ravel()


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if a.shape != b.shape:
        raise ValueError(f"maps: shapes differ ({a.shape} vs {b.shape})")
    return importance(a), importance(b)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks, tied values sharing their mean rank (many pixels of a map are exactly 0)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first position of each tie group
    sizes = np.diff(np.r_[starts, len(values)])
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(starts + (sizes - 1) / 2, sizes)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of the pixel importances; NaN when a map is constant (no ranking)."""
    x, y = _check_pair(a, b)
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denominator if denominator > 0 else math.nan


def top_k(values: np.ndarray, k: float) -> set[int]:
    """The pixels of the largest `k` share (at least one); ties broken by pixel order, for determinism."""
    count = max(1, round(k * len(values)))
    return set(np.argsort(-values, kind="stable")[:count].tolist())


def topk_overlap(a: np.ndarray, b: np.ndarray, k: float = DEFAULT_K) -> float:
    """Share of map a's top-k pixels that are also among map b's top-k (k a fraction of the pixels)."""
    if not 0 < k <= 1:
        raise ValueError(f"k: expected a fraction of the pixels in (0, 1], got {k!r}")
    x, y = _check_pair(a, b)
    first, second = top_k(x, k), top_k(y, k)
    return len(first & second) / len(first)


def mean_agreement(student: list[np.ndarray], teacher: list[np.ndarray], k: float) -> tuple[float, float]:
    """(mean Spearman, mean top-k overlap) over paired maps; Spearman skips constant maps."""
    rhos = [spearman(s, t) for s, t in zip(student, teacher, strict=True)]
    overlaps = [topk_overlap(s, t, k) for s, t in zip(student, teacher, strict=True)]
    finite = [r for r in rhos if not math.isnan(r)]
    return (sum(finite) / len(finite) if finite else math.nan), sum(overlaps) / len(overlaps)
