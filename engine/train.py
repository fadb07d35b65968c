"""The training step and loop: one loop for teachers (cross-entropy) and students (CE + paths).

A step produces named terms ("task", one "path:<id>" per path, a path method's own terms); the run's
objective (engine/objective.py) weighs them with the run's weighting and backpropagates their sum. New
distillers, path methods and weightings plug in through their registries without touching this file.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from engine.data.bundle import DataBundle, Split, iterate_batches
from engine.data.stream import Batch, live_batches, view_batches
from engine.data.teacher_cache import CachedTaps
from engine.diagnostics.probe import GradientProbe
from engine.distributed.reducer import Reducer
from engine.methods.base import PathMethod
from engine.objective import Objective, StepResult
from engine.models.spots import TappedModel
from engine.paths.base import split_spot
from engine.step import PathRoute, Reporter, StepContext, TappedShapes
from engine.terms import TermInfo
from engine.runtime import NonFiniteLoss
from engine.spec import OptimizerSpec, ScheduleSpec
from engine.telemetry import Recorded, Telemetry
from engine.weightings.base import Weighting
from engine.workspace import save_atomic
from engine.vocabulary import (
    HURTS, LABELS_KEY, LOGITS_SPOT, LR_KEY, MAIN_PHASE, TASK, TEST_ACC, THROUGHPUT_KEY, TIME_SECTIONS,
    TOTAL_LOSS, TRAIN_ACC, VAL_ACC, VAL_LOSS, loss_key, time_key, weight_key,
)

EVAL_BATCH = 512
EVAL_BATCH_BYTES = 64 << 20  # large images (224 px) are evaluated in smaller batches: 106 instead of 512


def eval_batch_size(split: Split) -> int:
    """EVAL_BATCH, or fewer for large images: the same for a split in memory or streamed (equal runs)."""
    per_image = 4 * math.prod(split.x.shape[1:]) if len(split.x.shape) > 1 else 4
    return max(1, min(EVAL_BATCH, EVAL_BATCH_BYTES // max(per_image, 1)))


# ------------------------------------------------------------------ reporting
class NullReporter:
    """Keeps everything in memory; for tests and library use."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int, int, str, float]] = []
        self.arrays: list[tuple[str, int, int, str, Recorded]] = []
        self.events: list[tuple[str, str]] = []
        self.last_progress = 0.0

    def log(self, phase, step, epoch, values):
        self.rows += [(phase, step, epoch, k, v) for k, v in values.items()]

    def log_array(self, phase, step, epoch, key, recorded):
        self.arrays.append((phase, step, epoch, key, recorded))

    def event(self, level, message, data=None):
        self.events.append((level, message))

    def progress(self, fraction, phase):
        self.last_progress = fraction

    def check_stop(self):
        pass

    def truncate(self, phase, epoch):
        self.rows = [r for r in self.rows if not (r[0] == phase and r[2] > epoch)]
        self.arrays = [a for a in self.arrays if not (a[0] == phase and a[2] > epoch)]

    def flush(self):
        pass

    def series(self, key: str, phase: str = MAIN_PHASE) -> list[float]:
        return [r[4] for r in self.rows if r[0] == phase and r[3] == key]


# ------------------------------------------------------------------ seeds
def epoch_generator(seed: int, phase: str, epoch: int) -> torch.Generator:
    """Shuffling and augmentation depend only on (seed, phase, epoch): resuming is exact."""
    phase_salt = sum(ord(c) * 31**i for i, c in enumerate(phase)) % 1_000_003
    return torch.Generator().manual_seed(seed * 1_000_003 + phase_salt * 1_009 + epoch)


# ------------------------------------------------------------------ the learner
@dataclass
class TeacherTaps:
    """A frozen teacher and the spots its paths read."""

    model: TappedModel

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self.model(x)


def read_tap(taps: dict[str, torch.Tensor], spot: str) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """One tapped tensor, or a tuple for a compound spot such as 'layer1+layer2'."""
    names = split_spot(spot)
    return taps[spot] if len(names) == 1 else tuple(taps[name] for name in names)


WeightingFactory = Callable[[list[TermInfo]], Weighting]


def module_key(path_id: str) -> str:
    """A path id as an nn.ModuleDict key: module names cannot hold '.', which path ids may; ids without one are
    unchanged, so checkpoints written before stay loadable."""
    return path_id.replace(".", "\u00b7")


class Learner(nn.Module):
    """The student, its paths' distillers, the path method and the weighting: everything a step trains."""

    def __init__(self, student: TappedModel, distillers: dict[str, nn.Module], path_spots: dict[str, PathRoute],
                 method: PathMethod, make_weighting: WeightingFactory, teachers: dict[str, TeacherTaps],
                 shapes: TappedShapes | None = None) -> None:
        """make_weighting gets the method's weighable terms (known once the method is attached)."""
        super().__init__()
        self.student = student
        self.distillers = nn.ModuleDict({module_key(pid): d for pid, d in distillers.items()})
        self.path_spots = path_spots  # path id -> PathRoute(teacher id, teacher spot, student spot)
        self.teachers = teachers  # plain dict: frozen teachers are neither trained nor saved here
        self.shapes = shapes or TappedShapes({}, {})
        self.cached: dict[str, CachedTaps] = {}  # teacher id -> its cached taps (see runner.attach_teacher_cache)
        self.method = method
        method.attach(self)
        method_terms = method.term_infos(self)
        self.weighting = make_weighting([t for t in method_terms if t.weighable])
        self.weighting.attach(self)
        self.objective = Objective(method, method_terms, self.weighting)
        self.objective.attach(self)

    def terms(self, x: torch.Tensor, y: torch.Tensor, ctx: StepContext, batch: Batch | None = None
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The named terms of one batch (task and the method's), and the student's logits; taps stay in ctx."""
        ctx.x = x
        ctx.teacher_taps = {tid: self._teacher_taps(tid, x, batch) for tid in self.teachers}  # once per step each
        ctx.mark("teachers")
        ctx.student_taps = self.student(x)
        ctx.mark("student")
        logits = ctx.student_taps[LOGITS_SPOT]
        values = {TASK: F.cross_entropy(logits, y), **self.method.terms(self, ctx)}
        ctx.mark("paths")
        return values, logits

    def own_learner_parameters(self) -> set[int]:
        """ids of the parameters that train on their own optimizers (kept out of the student's)."""
        return {id(p) for part in self.objective.learners for p in part.parameters()}

    def _teacher_taps(self, tid: str, x: torch.Tensor, batch: Batch | None) -> dict[str, torch.Tensor]:
        if batch is not None and tid in self.cached:
            return self.cached[tid].lookup(batch.position, batch.view, x.device)
        return self.teachers[tid](x)

    def path_loss(self, pid: str, student_taps: dict[str, torch.Tensor],
                  teacher_taps: dict[str, dict[str, torch.Tensor]], ctx: StepContext) -> torch.Tensor:
        """Path `pid`'s distiller on the given taps (path methods may pass subsets or mixed taps)."""
        tid, t_spot, s_spot = self.path_spots[pid]
        distiller = self.distillers[module_key(pid)]
        return distiller(read_tap(student_taps, s_spot), read_tap(teacher_taps[tid], t_spot), ctx)

    def path_sample_losses(self, pid: str, student_taps: dict[str, torch.Tensor],
                           teacher_taps: dict[str, dict[str, torch.Tensor]], ctx: StepContext) -> torch.Tensor:
        """Path `pid`'s (B,) per-sample losses (per-sample teacher weights); TypeError if its distiller has none."""
        tid, t_spot, s_spot = self.path_spots[pid]
        distiller = self.distillers[module_key(pid)]
        return distiller.sample_losses(read_tap(student_taps, s_spot), read_tap(teacher_taps[tid], t_spot), ctx)

    def state_for_checkpoint(self) -> dict[str, Any]:
        return {"model": self.student.model.state_dict(), "distillers": self.distillers.state_dict(),
                "method": self.method.state_dict(), "weighting": self.weighting.state_dict()}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.student.model.load_state_dict(state["model"])
        self.distillers.load_state_dict(state["distillers"])
        if "aggregator" in state:  # a checkpoint from before the split: one module played both roles
            legacy_role = self.weighting if type(self.method) is PathMethod else self.method
            legacy_role.load_state_dict(state["aggregator"])
            return
        self.method.load_state_dict(state["method"])
        self.weighting.load_state_dict(state["weighting"])


def _param_groups(learner: Learner) -> list[dict[str, Any]]:
    """Student and distiller parts decay; a method's or weighting's weights (log-variances, latents) must not;
    parts with optimizers of their own stay out."""
    combining = {id(p) for p in (*learner.method.parameters(), *learner.weighting.parameters())}
    own = learner.own_learner_parameters()
    trained = [p for p in learner.parameters() if p.requires_grad and id(p) not in combining | own]
    groups = [{"params": trained}]
    undecayed = [p for p in (*learner.method.parameters(), *learner.weighting.parameters())
                 if p.requires_grad and id(p) not in own]
    if undecayed:
        groups.append({"params": undecayed, "weight_decay": 0.0})
    return groups


def build_optimizer(params: list[Any], spec: OptimizerSpec) -> torch.optim.Optimizer:
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum,
                               weight_decay=spec.weight_decay, nesterov=spec.nesterov and spec.momentum > 0)
    cls = torch.optim.Adam if spec.name == "adam" else torch.optim.AdamW
    return cls(params, lr=spec.lr, weight_decay=spec.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, spec: ScheduleSpec, epochs: int):
    if spec.name == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=spec.milestones, gamma=spec.gamma)
    if spec.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _epoch: 1.0)


# ------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(model: nn.Module, split: Split, device: torch.device) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of a plain or tapped model on a split."""
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for x, y, _ in iterate_batches(split, eval_batch_size(split), shuffle=False, generator=None):
        x, y = x.to(device), y.to(device)
        out = model(x)
        logits = out[LOGITS_SPOT] if isinstance(out, dict) else out
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    model.train(was_training)
    n = max(len(split.y), 1)
    return correct / n, loss_sum / n


# ------------------------------------------------------------------ the loop
@dataclass
class FitConfig:
    phase: str
    epochs: int
    seed: int
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    augment: str
    batch_size: int
    log_every: int
    telemetry_every: int
    checkpoint_dir: Path | None  # None: no checkpoints (inline teachers are cached whole instead)
    progress: Callable[[float], None] = field(default=lambda _f: None)
    views: torch.Tensor | None = None  # fixed (views, N, C, H, W) images of a cached run; None: live augmentation
    probe: GradientProbe | None = None  # the negative-transfer probe, when diagnostics are on
    autocast_dtype: torch.dtype | None = None  # bf16 on a GPU that has it; None: full precision
    # Several DDP processes (engine/distributed/): shards batches, values terms over the global batch; one process:
    # a no-op
    reducer: Reducer = field(default_factory=Reducer)


def _check_finite(phase: str, step: int, total: torch.Tensor, losses: dict[str, torch.Tensor]) -> None:
    if torch.isfinite(total):
        return
    for name, value in losses.items():
        if not torch.isfinite(value):
            raise NonFiniteLoss(phase, step, name, value.item())
    raise NonFiniteLoss(phase, step, "total", total.item())


def fit(learner: Learner, bundle: DataBundle, cfg: FitConfig, device: torch.device, reporter: Reporter
        ) -> dict[str, float]:
    """Train for cfg.epochs (resuming from cfg.checkpoint_dir/last.pt when present); return final metrics."""
    optimizer = build_optimizer(_param_groups(learner), cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.epochs)
    start_epoch, step = _resume(learner, optimizer, scheduler, cfg, reporter)
    steps_per_epoch = math.ceil(len(bundle.train.y) / cfg.batch_size)
    metrics: dict[str, float] = {}
    timer = StepTimer(device)  # one per phase: every logged time/* covers log_every steps, across epochs
    for epoch in range(start_epoch, cfg.epochs):
        step, train_acc = _train_epoch(learner, optimizer, bundle.train, cfg, epoch, step, timer, reporter,
                                       steps_per_epoch)
        scheduler.step()
        learner.method.on_epoch_end(epoch)
        learner.weighting.on_epoch_end(epoch)
        metrics = _end_of_epoch(learner, bundle, cfg, epoch, step, train_acc, device, reporter)
        # The epoch's rows are stored before its checkpoint: a process killed in between resumes from the epoch
        # before, dropping and re-logging these rows, where the other order would lose them.
        reporter.flush()
        if cfg.checkpoint_dir is not None and cfg.reducer.writes:  # one writer; every process resumes from it
            _save_checkpoint(learner, optimizer, scheduler, cfg, epoch, step)
    if not metrics:  # resumed after the last epoch: recompute what the run ended with
        metrics = _final_metrics(learner, bundle, device)
    return metrics


def _batches(split: Split, cfg: FitConfig, generator: torch.Generator):
    if cfg.views is not None:
        return view_batches(split, cfg.views, cfg.batch_size, generator)
    return live_batches(split, cfg.batch_size, cfg.augment, generator)


def _train_epoch(learner: Learner, optimizer: torch.optim.Optimizer, split: Split, cfg: FitConfig, epoch: int,
                 step: int, timer: "StepTimer", reporter: Reporter, steps_per_epoch: int) -> tuple[int, float]:
    learner.train()
    generator = epoch_generator(cfg.seed, cfg.phase, epoch)
    device = timer.device
    timer.begin_epoch()
    on_gpu = device.type == "cuda"
    correct, seen = torch.zeros((), dtype=torch.long, device=device), 0
    last_weights: dict[str, torch.Tensor] = {}  # each term's weight on the previous step
    for i, batch in enumerate(_batches(split, cfg, generator)):
        cfg.reducer.check_stop(reporter)
        global_size = len(batch.y)
        batch, counted = cfg.reducer.shard(batch)  # this process's slice; counted: its samples that count
        logging = step % cfg.log_every == 0
        timer.start(measure=logging or not on_gpu)  # on a GPU, timing syncs: only on logged steps
        x = batch.x.to(device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last) if on_gpu and x.dim() == 4 else x
        y = batch.y.to(device, non_blocking=True)
        timer.mark("data")
        ctx = StepContext(labels=y, epoch=epoch, step=step, index=batch.index,
                          telemetry=Telemetry(due=step % cfg.telemetry_every == 0), mark=timer.mark)
        with _autocast(device, cfg.autocast_dtype):
            values, logits = cfg.reducer.terms(learner, x, y, ctx, batch)
        if cfg.probe is not None and cfg.probe.due(step):
            _probe(learner, values, ctx, cfg, optimizer, last_weights, reporter, epoch)
            timer.mark("diagnostics")
        optimizer.zero_grad(set_to_none=True)
        result = learner.objective.backward(values, ctx, cfg.reducer)
        last_weights = result.weights
        if logging or not on_gpu:  # a finiteness check syncs with the GPU: there, only at logging boundaries
            _check_finite(cfg.phase, step, result.total, result.values)
        optimizer.step()
        timer.mark("backward")
        _record_arrays(ctx, y, batch.index, cfg.phase, step, epoch, reporter)
        correct += (logits.detach().argmax(1) == y)[:counted].sum()
        seen += counted
        timer.end(global_size)
        if logging:
            reporter.log(cfg.phase, step, epoch, {**_step_values(result, optimizer), **timer.report()})
        step += 1
        cfg.progress((epoch + (i + 1) / steps_per_epoch) / cfg.epochs)
    return step, cfg.reducer.accuracy(correct, seen)


def _probe(learner: Learner, values: dict[str, torch.Tensor], ctx: StepContext, cfg: FitConfig,
           optimizer: torch.optim.Optimizer, weights: dict[str, torch.Tensor], reporter: Reporter, epoch: int) -> None:
    probe, objective = cfg.probe, learner.objective
    flagged = {pid for pid, verdict in probe.verdicts().items() if verdict == HURTS}
    measured = probe.measure(learner, values[TASK], objective.path_losses(learner, values, ctx), ctx, optimizer,
                             objective.path_weights(probe.path_ids, weights), learner.weighting.probe_weights(),
                             cfg.reducer)
    reporter.log(cfg.phase, ctx.step, epoch, measured)
    learner.weighting.on_probe(probe)
    for pid, details in probe.details().items():
        if details["verdict"] == HURTS and pid not in flagged:
            reporter.event("warning", f"path {pid} flagged as hurting at step {ctx.step}: it "
                                      f"{details['explanation']} (confidence {details['confidence']:.2f})",
                           {"path": pid, **details})


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _record_arrays(ctx: StepContext, y: torch.Tensor, index: torch.Tensor, phase: str, step: int, epoch: int,
                   reporter: Reporter) -> None:
    if not ctx.telemetry.arrays:
        return
    ctx.telemetry.record(LABELS_KEY, y, index)  # per-class views of the arrays need the labels
    for key, recorded in ctx.telemetry.arrays.items():
        reporter.log_array(phase, step, epoch, key, recorded)


class StepTimer:
    """Where a step's time goes: data, teachers, student forward, path terms, weighting, backward, diagnostics.

    The weighting's section is logged as "aggregator" (the key stored runs use): weighing and combining the
    terms, the gradient matrix a weighting asks for, and its own learners' steps; "backward" is the backward
    pass of the combined loss and the optimizer step.

    Reports milliseconds per measured step for each section and samples per second over all
    steps since the last report. On a GPU a measured step synchronises at each mark, so only
    logged steps are measured there.
    """

    SECTIONS = TIME_SECTIONS  # logged as "time/<section>"; the Live page draws them in this order

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.totals = dict.fromkeys(self.SECTIONS, 0.0)
        self.measured = self.samples = 0
        self.window_start = time.perf_counter()
        self.measuring = False
        self.last = 0.0

    def begin_epoch(self) -> None:
        """Samples/s restarts with each epoch, leaving out the evaluation between epochs; section times carry
        over, so the steps after an epoch's last log are reported with the next epoch's first."""
        self.samples = 0
        self.window_start = time.perf_counter()

    def start(self, measure: bool) -> None:
        self.measuring = measure
        if measure:
            self.sync()
            self.last = time.perf_counter()

    def mark(self, section: str) -> None:
        if self.measuring:
            self.sync()
            now = time.perf_counter()
            self.totals[section] += now - self.last
            self.last = now

    def end(self, samples: int) -> None:
        self.samples += samples
        self.measured += self.measuring

    def report(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.window_start
        values = {time_key(s): 1000 * t / max(self.measured, 1) for s, t in self.totals.items()}
        values[THROUGHPUT_KEY] = self.samples / elapsed if elapsed > 0 else 0.0
        self.totals = dict.fromkeys(self.SECTIONS, 0.0)
        self.measured = self.samples = 0
        self.window_start = time.perf_counter()
        return values


def _step_values(result: StepResult, optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """Total, every term's value and weight, and the learning rate, read from the device in one transfer."""
    names = list(result.values)
    learnt = [n for n in names if torch.is_tensor(result.weights[n])]  # fixed weights are plain floats
    tensors = [result.total, *(result.values[n] for n in names), *(result.weights[n] for n in learnt)]
    numbers = torch.stack([t.detach().float().reshape(()) for t in tensors]).tolist()
    values = {TOTAL_LOSS: numbers[0], LR_KEY: optimizer.param_groups[0]["lr"]}
    values.update({loss_key(n): v for n, v in zip(names, numbers[1:1 + len(names)])})
    weights = {n: float(result.weights[n]) for n in names if n not in learnt}
    weights.update(zip(learnt, numbers[1 + len(names):]))
    values.update({weight_key(n): weights[n] for n in names})
    return values


def _final_metrics(learner: Learner, bundle: DataBundle, device: torch.device) -> dict[str, float]:
    val_acc, val_loss = evaluate(learner.student, bundle.val, device)
    test_acc, _ = evaluate(learner.student, bundle.test, device)
    return {VAL_ACC: val_acc, VAL_LOSS: val_loss, TEST_ACC: test_acc}


def _end_of_epoch(learner: Learner, bundle: DataBundle, cfg: FitConfig, epoch: int, step: int, train_acc: float,
                  device: torch.device, reporter: Reporter) -> dict[str, float]:
    metrics = {TRAIN_ACC: train_acc, **_final_metrics(learner, bundle, device)}
    reporter.log(cfg.phase, step, epoch, metrics)
    return metrics


def _save_checkpoint(learner: Learner, optimizer, scheduler, cfg: FitConfig, epoch: int, step: int) -> None:
    folder = cfg.checkpoint_dir
    folder.mkdir(parents=True, exist_ok=True)
    state = {"epoch": epoch, "step": step, **learner.state_for_checkpoint(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "torch_rng": torch.get_rng_state(), "probe": cfg.probe.state_dict() if cfg.probe else None}
    save_atomic(state, folder / f"epoch_{epoch:03d}.pt")
    save_atomic(state, folder / "last.pt")


def _resume(learner: Learner, optimizer, scheduler, cfg: FitConfig, reporter: Reporter) -> tuple[int, int]:
    """(first epoch to run, global step) from the last checkpoint, or (0, 0)."""
    last = cfg.checkpoint_dir / "last.pt" if cfg.checkpoint_dir else None
    if last is None or not last.exists():
        reporter.truncate(cfg.phase, -1)  # a restart from scratch must not keep half an epoch of metrics
        return 0, 0
    state = torch.load(last, map_location="cpu", weights_only=True)
    learner.load_checkpoint_state(state)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if cfg.probe is not None and state.get("probe"):
        cfg.probe.load_state_dict(state["probe"])
    reporter.truncate(cfg.phase, state["epoch"])
    reporter.event("info", f"resumed {cfg.phase} from the checkpoint of epoch {state['epoch'] + 1}")
    return state["epoch"] + 1, state["step"]
