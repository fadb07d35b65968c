"""The one hook the training step has for running over several processes: a reducer.

``Reducer`` is what a one-process run uses: every method is the identity (or calls through), so the loop in
engine/train.py reads the same with or without DDP. engine/distributed/group.py's ``GroupReducer`` is the
several-process one (a torch.distributed process group, the learner wrapped in DistributedDataParallel).
What the loop asks of it, in step order:

    check_stop(reporter)            the reporter's stop/cancel check (rank 0's answer reaches every process)
    shard(batch)                    this process's slice of the global batch, and how many of its samples count
    terms(learner, x, y, ctx, b)    the step's named terms, each valued over the *global* batch
    mean(tensor)                    the mean over processes of per-process tensors (per-term gradient matrices)
    accuracy(correct, seen)         the epoch's training accuracy over every process's samples
    writes                          whether this process writes checkpoints and the result (rank 0 only)
    writer_first(work)              rank 0 does ``work`` (which may write teacher and cache files) before the rest

Neutral module: torch only (the loop's types are named for type checkers only).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, TypeVar

import torch

if TYPE_CHECKING:
    from engine.step import StepContext


class _Sliceable(Protocol):
    y: torch.Tensor


BatchT = TypeVar("BatchT", bound=_Sliceable)
T = TypeVar("T")


class _TermSource(Protocol):
    def terms(self, x: torch.Tensor, y: torch.Tensor, ctx: "StepContext", batch: object
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor]: ...


class _StopCheck(Protocol):
    def check_stop(self) -> None: ...


class Reducer:
    """One process: the global batch is the local one and nothing is exchanged."""

    rank = 0
    world_size = 1
    writes = True
    device: torch.device | None = None  # None: the spec's device

    def check_stop(self, reporter: _StopCheck) -> None:
        reporter.check_stop()

    def shard(self, batch: BatchT) -> tuple[BatchT, int]:
        return batch, len(batch.y)

    def terms(self, learner: _TermSource, x: torch.Tensor, y: torch.Tensor, ctx: "StepContext", batch: object
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return learner.terms(x, y, ctx, batch)

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def accuracy(self, correct: torch.Tensor, seen: int) -> float:
        return correct.item() / max(seen, 1)

    def writer_first(self, work: Callable[[], T]) -> T:
        return work()


def slice_bounds(size: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous slice of a batch of ``size``: sizes differ by at most one, the first
    ``size % world_size`` ranks taking the extra sample (torch.tensor_split's rule)."""
    base, extra = divmod(size, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)
