"""The negative-transfer probe: what does each path's share of the update do to held-out loss?

Every `every` steps, with the step's graph still alive, it takes the gradient of the task loss and of
each path's own loss with respect to the student's weights, sends each weighted gradient through the
optimizer's step rule and measures the change of validation loss its share causes (effect.py), around
the update without the paths already judged harmful. Validation samples are split into chunks for the
effect's standard error. The gradient's cosines with the task gradient on the batch and on a
validation batch are measured too, as evidence and for the cosine detector. Nothing of the step
changes: no weight, optimizer state, batch-norm statistic or random-number state (tested).

Cost: one backward pass for the task, one per path and one for the validation gradient, plus one
forward pass over the validation sample per path and two more (the base point, the task). The run's
telemetry logs it as the "diagnostics" section of step time, and ``auto_every`` keeps it near a tenth.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator

import torch
import torch.nn.functional as F

from engine.data.bundle import Split, iterate_batches
from engine.diagnostics.effect import measure_effects, term_shares
from engine.diagnostics.step_rule import StepRule
from engine.diagnostics.verdicts import VERDICT_CODE, PathEvidence, VerdictRule, update
from engine.distributed.reducer import Reducer
from engine.gradients import cosine, flat_grads
from engine.vocabulary import HURTS, TASK, diag_key

if TYPE_CHECKING:
    from engine.step import LearnerView as Learner, StepContext


class GradientProbe:
    def __init__(self, path_ids: list[str], every: int, rule: VerdictRule, val: Split, val_batch_size: int,
                 seed: int, chunks: int = 4) -> None:
        if len(val) == 0:
            raise ValueError("diagnostics need a validation split: set dataset.val_fraction above 0")
        self.path_ids = list(path_ids)
        self.every = every
        self.rule = rule
        self.val = val
        self.val_batch_size = val_batch_size
        self.chunks = min(chunks, len(val))  # a chunk needs a sample
        self.seed = seed
        self.evidence = {pid: PathEvidence() for pid in path_ids}
        self._val_batches: Iterator | None = None
        self._val_epoch = 0

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def measure(self, learner: "Learner", task_loss: torch.Tensor, path_losses: dict[str, torch.Tensor],
                ctx: "StepContext", optimizer: torch.optim.Optimizer, weights: dict[str, float],
                measured_at: dict[str, float] | None = None, reducer: Reducer | None = None) -> dict[str, float]:
        """Probe this step (its graph must still be alive); returns the metrics to log.

        path_losses: each path's own loss (engine.objective.Objective.path_losses); weights: the weight of the
        task and of each path in this step (what their shares are scaled by, and what is recorded); measured_at:
        other weights to measure some paths' shares at (lookahead: a gated path at its configured weight);
        reducer: over several processes, averages the batch gradients (the validation batch is every process's)."""
        with _rng_kept(task_loss.device):
            return self._measure(learner, task_loss, path_losses, ctx, optimizer, weights, measured_at or {},
                                 reducer or Reducer())

    def _measure(self, learner: "Learner", task_loss: torch.Tensor, path_losses: dict[str, torch.Tensor],
                 ctx: "StepContext", optimizer: torch.optim.Optimizer, weights: dict[str, float],
                 measured_at: dict[str, float], reducer: Reducer) -> dict[str, float]:
        params = [p for p in learner.student.parameters() if p.requires_grad]
        names = [TASK, *self.path_ids]
        losses = {TASK: task_loss, **path_losses}
        # autograd.grad leaves DDP's hooks alone: one all-reduce of the whole (1 + paths, P) matrix
        rows = reducer.mean(torch.stack([flat_grads(losses[name], params).float() for name in names]))
        grads = dict(zip(names, rows.unbind()))
        x, y = self._next_val_batch()
        x, y = x.to(task_loss.device), y.to(task_loss.device)
        val = self._validation_gradient(learner, params, x, y)
        shares = term_shares(StepRule(optimizer, params), grads, {**weights, **measured_at})
        trusted = [pid for pid in self.path_ids if self.evidence[pid].verdict != HURTS]
        effects = measure_effects(learner.student.model, params, shares, [TASK, *trusted], x, y, self.chunks)
        metrics = {diag_key("norm", TASK): float(grads[TASK].norm()), diag_key("norm", "val"): float(val.norm()),
                   diag_key("effect", TASK): effects[TASK].mean}
        for pid in self.path_ids:
            measured = {"effect": effects[pid].mean, "effect_se": effects[pid].se, "task_effect": effects[TASK].mean,
                        "weight": weights[pid], "cos_val": cosine(grads[pid], val),
                        "cos_task": cosine(grads[pid], grads[TASK])}
            evidence = self.evidence[pid]
            update(evidence, ctx.step, measured, self.rule)
            metrics.update({diag_key(name, pid): measured[name]
                            for name in ("effect", "effect_se", "weight", "cos_val", "cos_task")})
            metrics.update({diag_key("norm", pid): float(grads[pid].norm()), diag_key("score", pid): evidence.score[-1],
                            diag_key("verdict", pid): VERDICT_CODE[evidence.verdict],
                            diag_key("confidence", pid): evidence.confidence,
                            diag_key("cosine_verdict", pid): VERDICT_CODE[evidence.cosine_verdict]})
        return metrics

    def _validation_gradient(self, learner: "Learner", params: list[torch.nn.Parameter], x: torch.Tensor,
                             y: torch.Tensor) -> torch.Tensor:
        student = learner.student
        was_training = student.training
        student.eval()  # BN running statistics must not learn from validation data
        try:
            return flat_grads(F.cross_entropy(student(x)["fc"], y), params, retain_graph=False).float()
        finally:
            student.train(was_training)

    def _next_val_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Validation batches in a seeded order, cycling through the split."""
        while True:
            if self._val_batches is None:
                generator = torch.Generator().manual_seed(self.seed * 104_729 + self._val_epoch)
                self._val_batches = iterate_batches(self.val, self.val_batch_size, shuffle=True, generator=generator)
                self._val_epoch += 1
            batch = next(self._val_batches, None)
            if batch is not None and len(batch[1]) >= self.chunks:
                return batch[0], batch[1]
            self._val_batches = None

    # ------------------------------------------------------------ results and state
    def verdicts(self) -> dict[str, str]:
        return {pid: e.verdict for pid, e in self.evidence.items()}

    def details(self) -> dict[str, dict[str, Any]]:
        return {pid: e.summary(self.rule) for pid, e in self.evidence.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"evidence": {pid: vars(e).copy() for pid, e in self.evidence.items()}, "val_epoch": self._val_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.evidence = {pid: PathEvidence.from_state(fields) for pid, fields in state["evidence"].items()}
        self._val_epoch = state["val_epoch"]
        self._val_batches = None


@contextlib.contextmanager
def _rng_kept(device: torch.device):
    """Whatever the probe draws, the step's random-number streams continue as if it had not run."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


def auto_every(num_paths: int) -> int:
    """A cadence whose cost stays near a tenth of training: a probe costs about num_paths + 2 backward passes
    and as many forward passes over the validation sample."""
    return 10 * (num_paths + 2)
