"""(a) the floor and (b) naive KD: the least code that trains the student on the bench's tensors.

No logging, no metrics, no checkpoints, PyTorch's default (non-deterministic) kernels: what any
framework's epoch is compared with. The optimizer matches PathScope's defaults (SGD, lr 0.05,
momentum 0.9, weight decay 5e-4), the batches the engine's (a fresh seeded permutation per epoch,
batch 64).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from bench.workload import BATCH_SIZE, Workload, load_teacher, new_student

TEMPERATURE = 4.0


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Hinton's T^2-scaled KL between softened distributions."""
    log_p_s = F.log_softmax(student_logits / TEMPERATURE, dim=1)
    log_p_t = F.log_softmax(teacher_logits / TEMPERATURE, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * TEMPERATURE**2


def epoch_seconds(student: nn.Module, teacher: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
                  optimizer: torch.optim.Optimizer, generator: torch.Generator) -> float:
    student.train()
    start = time.perf_counter()
    order = torch.randperm(len(y), generator=generator)
    for first in range(0, len(y), BATCH_SIZE):
        batch = order[first:first + BATCH_SIZE]
        xb, yb = x[batch], y[batch]
        logits = student(xb)
        loss = F.cross_entropy(logits, yb)
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(xb)
            loss = loss + kd_loss(logits, teacher_logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def plain_epochs(workload: Workload, with_teacher: bool, epochs: int) -> list[float]:
    """Seconds of each of ``epochs`` epochs: CE only, or CE + KD from the first teacher's forward pass."""
    # execute_run switches deterministic algorithms on for the whole process (a few % on this CPU, mostly
    # from filling new tensors); the floor is plain PyTorch, so it runs with the default.
    torch.use_deterministic_algorithms(False)
    student = new_student(workload)
    teacher = load_teacher(workload, workload.teachers[0]) if with_teacher else None
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    train = workload.bundle.train
    return [epoch_seconds(student, teacher, train.x, train.y, optimizer, generator) for _ in range(epochs)]


def same_objective_epochs(workload: Workload, paths: list[dict], epochs: int) -> list[float]:
    """Seconds per epoch of the least code that trains the student on CE + the paths' losses, unweighted.

    The losses are PathScope's distiller modules (the maths a user asked for), the teachers' taps are
    computed once up front (as the engine's cache does), and the student's taps come from forward hooks:
    what is left between this and the engine's epoch is the engine's own work per step.
    """
    torch.use_deterministic_algorithms(False)
    from engine.paths import DISTILLERS  # the bench's only engine import here: the losses themselves

    train = workload.bundle.train
    student = new_student(workload)
    student_taps = _hooked(student, {p["student_spot"] for p in paths})
    teacher_taps = {}
    for teacher in workload.teachers:
        spots = {p["teacher_spot"] for p in paths if p["teacher"] == teacher.id}
        if spots:
            model = load_teacher(workload, teacher)
            taps = _hooked(model, spots)
            with torch.no_grad():
                model(train.x)
            teacher_taps[teacher.id] = {spot: taps[spot].detach() for spot in spots}
    with torch.no_grad():
        student(train.x[:2])
    losses = [DISTILLERS.get(p["distiller"])(tuple(student_taps[p["student_spot"]].shape[1:]),
                                             tuple(teacher_taps[p["teacher"]][p["teacher_spot"]].shape[1:]))
              for p in paths]
    parameters = list(student.parameters()) + [q for loss in losses for q in loss.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=0.05, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    return [_same_objective_epoch(student, student_taps, teacher_taps, paths, losses, train.x, train.y, optimizer,
                                  generator) for _ in range(epochs)]


def _hooked(model: nn.Module, spots: set[str]) -> dict[str, torch.Tensor]:
    """Forward hooks leaving each spot's output (small_cnn's modules; "pool" flattened) in the returned dict."""
    taps: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    for spot in spots:
        def keep(_module, _inputs, output, spot=spot):
            taps[spot] = output.flatten(1) if spot == "pool" else output
        modules[spot].register_forward_hook(keep)
    return taps


def _same_objective_epoch(student, student_taps, teacher_taps, paths, losses, x, y, optimizer, generator) -> float:
    student.train()
    start = time.perf_counter()
    order = torch.randperm(len(y), generator=generator)
    for first in range(0, len(y), BATCH_SIZE):
        batch = order[first:first + BATCH_SIZE]
        logits = student(x[batch])
        loss = F.cross_entropy(logits, y[batch])
        for path, distiller in zip(paths, losses):
            target = teacher_taps[path["teacher"]][path["teacher_spot"]][batch]
            loss = loss + distiller(student_taps[path["student_spot"]], target, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start
