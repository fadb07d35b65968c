"""Per-sample arrays a path method or weighting emits at a cadence (per-instance weights, routing decisions, alphas).

Scalars (losses, path weights) are logged every `log_every` steps by the loop; arrays are
larger, so they are recorded only on steps where ``due`` is set (every `telemetry_every`
steps) and always with the sample ids they belong to.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the store imports this module and must stay light for the CLI and the pages
    import torch


@dataclass(frozen=True)
class Recorded:
    values: np.ndarray  # (B, ...)
    index: np.ndarray  # (B,) sample ids; -1 for a row that belongs to no sample (DFA's alphas)
    columns: list[str] | None  # names of the last axis (teacher ids, spots), when it has names


@dataclass
class Telemetry:
    due: bool = False
    arrays: dict[str, Recorded] = field(default_factory=dict)

    def record(self, key: str, values: "torch.Tensor", index: "torch.Tensor", columns: list[str] | None = None) -> None:
        """values: (B, ...) for the samples `index` (B,); kept only when due."""
        if self.due:
            self.arrays[key] = Recorded(values.detach().float().cpu().numpy(), index.detach().cpu().numpy(),
                                        list(columns) if columns is not None else None)
