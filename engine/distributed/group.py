"""The several-process reducer: a torch.distributed process group and the learner under DistributedDataParallel.

How a step over N processes equals the one-process step on the same global batch:

- Batches. Every process draws the epoch's permutation from the same ``epoch_generator(seed, phase, epoch)`` and
  takes a contiguous slice of each global batch (``shard``). This is what DistributedSampler does with
  ``set_epoch(epoch)`` (a permutation seeded by seed + epoch, the same on every rank, each rank taking its part),
  but sliced per batch, not per epoch, so step k trains on the very samples of the one-process step k. A slice's
  positions are rows of the train split, the teacher cache's key: each process reads its shard of the cache.
- Uneven slices. A process holding n_r of the batch's n samples scales its terms' gradients by N n_r / n; DDP
  averages gradients over N processes, so the sum is sum_r (n_r / n) g_r, the global batch mean. A process whose
  slice would be empty (a last batch smaller than N) recomputes one sample at share 0.
- Term values. Each term's value is all-reduced to the global-batch value (sum_r n_r / n v_r) before the weighting,
  the logs, the non-finite check and the probe see it; its gradient is this process's scaled one (``_global``).
  Weights that depend on values (DWA's ratios, loss balance) are then the same on every process. Terms that relate
  the samples of a batch to each other (RKD, AMTML's angle loss) are valued over each process's slice, as
  BatchNorm without SyncBatchNorm is: their runs are close to, not equal to, the one-process run.
- Unused parameters. Routing methods (min_ce) can leave a distiller unused in a step on one process. Instead of
  ``find_unused_parameters`` (it traverses the graph from the forward's outputs, so it would mark the weighting's
  parameters, used only after the forward in the objective, unused and then fail when their gradient arrives), the
  task term gets 0 x the sum of every trainable parameter: each parameter gets a (zero) gradient every step.
- Telemetry. Per-sample arrays (AMTML's teacher weights) are rank 0's: they cover its slice of each batch.
- Frozen parts. The teachers sit in a plain dict of the learner, outside the wrapped module: each process keeps an
  evaluation-mode replica or reads the cache. A part frozen mid-run (AMTML's stage B) changes the trainable set: the
  learner is wrapped again at the next step.
"""
from __future__ import annotations

import dataclasses
import os
from datetime import timedelta
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from engine.distributed.reducer import Reducer, slice_bounds
from engine.runtime import RunCancelled, RunInterrupted
from engine.step import Reporter, StepContext
from engine.vocabulary import TASK

T = TypeVar("T")

#: a collective waits this long (rank 0 trains inline teachers and builds caches while the others wait)
GROUP_TIMEOUT = timedelta(hours=6)
#: what rank 0's stop check found, sent to every rank
_GO, _CANCEL, _INTERRUPT = 0, 1, 2


class _Step(nn.Module):
    """What DDP wraps: the learner (student, distillers, method, weighting), its step's terms as the forward."""

    def __init__(self, learner: nn.Module) -> None:
        super().__init__()
        self.learner = learner

    def forward(self, x: torch.Tensor, y: torch.Tensor, ctx: StepContext, batch: Any
                ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        values, logits = self.learner.terms(x, y, ctx, batch)
        trainable = [p for p in self.learner.parameters() if p.requires_grad]
        touch = torch.stack([p.sum() for p in trainable]).sum() * 0.0 if trainable else 0.0
        return {**values, TASK: values[TASK] + touch}, logits


class GroupReducer(Reducer):
    """This process's part of a run over the current default process group."""

    def __init__(self, device: torch.device) -> None:
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.writes = self.rank == 0
        self.device = device
        self.share = 1.0 / self.world_size  # n_r / n of the current step
        self._ddp: DistributedDataParallel | None = None
        self._trainable: tuple[int, ...] = ()

    # ------------------------------------------------------------ the step
    def check_stop(self, reporter: Reporter) -> None:
        """Rank 0 asks its reporter; every rank stops together, so none is left waiting in a collective."""
        flag = torch.tensor([_GO], device=self.device)
        if self.rank == 0:
            try:
                reporter.check_stop()
            except RunCancelled:
                flag.fill_(_CANCEL)
            except RunInterrupted:
                flag.fill_(_INTERRUPT)
        dist.broadcast(flag, src=0)
        if flag.item() == _CANCEL:
            raise RunCancelled("cancelled by the user")
        if flag.item() == _INTERRUPT:
            raise RunInterrupted("the process is stopping")

    def shard(self, batch: Any) -> tuple[Any, int]:
        size = len(batch.y)
        start, stop = slice_bounds(size, self.rank, self.world_size)
        counted = stop - start
        if counted == 0:  # a stand-in sample at share 0: the process still takes part in every collective
            start, stop = 0, 1
        self.share = counted / size
        part = {f.name: getattr(batch, f.name)[start:stop] for f in dataclasses.fields(batch)}
        return dataclasses.replace(batch, **part), counted

    def terms(self, learner: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: StepContext, batch: Any
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        values, logits = self._wrapped(learner)(x, y, ctx, batch)
        return self._global(values), logits

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.detach().clone()
        dist.all_reduce(out)
        return out / self.world_size

    def accuracy(self, correct: torch.Tensor, seen: int) -> float:
        counts = torch.stack([correct.to(self.device, torch.float64),
                              torch.tensor(float(seen), device=self.device, dtype=torch.float64)])
        dist.all_reduce(counts)
        return counts[0].item() / max(counts[1].item(), 1.0)

    def writer_first(self, work: Callable[[], T]) -> T:
        """Rank 0 does ``work`` (training inline teachers, building cache files) while the others wait; then they
        do it too, reading what it wrote."""
        if self.rank == 0:
            out = work()
            dist.barrier()
            return out
        dist.barrier()
        return work()

    # ------------------------------------------------------------ helpers
    def _global(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each value becomes sum_r share_r v_r (all ranks agree exactly); its gradient stays this rank's, scaled by
        N share_r so that DDP's mean over ranks is the global batch's gradient."""
        names = list(values)
        local = torch.stack([values[n].detach().float().reshape(()) for n in names]) * self.share
        dist.all_reduce(local)
        scale = self.share * self.world_size
        out = {}
        for name, total in zip(names, local.unbind()):
            scaled = values[name] * scale
            out[name] = total.to(scaled.dtype) + (scaled - scaled.detach())  # forward: the total; backward: scaled
        return out

    def _wrapped(self, learner: nn.Module) -> DistributedDataParallel:
        trainable = tuple(id(p) for p in learner.parameters() if p.requires_grad)
        if self._ddp is None or self._ddp.module.learner is not learner or trainable != self._trainable:
            # device_ids None: DDP leaves the step's inputs (the context it fills) as they are; buffers follow rank
            # 0's, so BatchNorm statistics, and with them evaluation, agree on every rank
            self._ddp = DistributedDataParallel(_Step(learner), device_ids=None, broadcast_buffers=True)
            self._trainable = trainable
        return self._ddp


def start_group(use_cuda: bool) -> torch.device:
    """Join the process group torchrun (or a Ray TorchTrainer) describes in the environment, unless joined already;
    NCCL with one GPU per local rank, gloo on CPUs. Returns this process's device."""
    if use_cuda:
        local_rank = int(torch.cuda.current_device() if dist.is_initialized() else _env_int("LOCAL_RANK"))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=GROUP_TIMEOUT)
    return device


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise RuntimeError(f"{name} is not set: start the ranks with torchrun (python -m torch.distributed.run)")
    return int(value)
