"""Gradient-geometry probe: does following each path move the student towards or away from held-out data?

Every `every` steps, on the step's own batch, it takes the gradient of each path loss and of
the task loss with respect to the student's parameters, and the task gradient on a
validation batch. Per path it records the cosine with the task gradient, the cosine with
the validation gradient, the gradient norm and the first-order lookahead
-lr * w * g_path . g_val: the predicted change of validation loss from that path's share
of the step (positive = the path raises validation loss). The cosines feed the verdicts.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import torch
import torch.nn.functional as F

from engine.data.bundle import Split, iterate_batches
from engine.gradients import cosine, flat_grads
from engine.diagnostics.verdicts import VERDICT_CODE, PathEvidence, VerdictRule, update
from engine.vocabulary import TASK, diag_key

if TYPE_CHECKING:
    from engine.step import LearnerView as Learner, StepContext


class GradientProbe:
    def __init__(self, path_ids: list[str], every: int, rule: VerdictRule, val: Split, val_batch_size: int,
                 seed: int) -> None:
        if len(val) == 0:
            raise ValueError("diagnostics need a validation split: set dataset.val_fraction above 0")
        self.path_ids = list(path_ids)
        self.every = every
        self.rule = rule
        self.val = val
        self.val_batch_size = val_batch_size
        self.seed = seed
        self.evidence = {pid: PathEvidence() for pid in path_ids}
        self.latest: dict[str, dict[str, float]] = {}  # path id -> this probe's measurements (lookahead reads it)
        self._val_batches: Iterator | None = None
        self._val_epoch = 0

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def measure(self, learner: "Learner", task_loss: torch.Tensor, path_losses: dict[str, torch.Tensor],
                ctx: "StepContext", lr: float, weights: dict[str, float]) -> dict[str, float]:
        """Probe this step (its graph must still be alive); returns the metrics to log.

        path_losses: each path's own loss (engine.objective.Objective.path_losses); weights: each path's
        weight on the previous step (1 for a path without a term of its own)."""
        params = [p for p in learner.student.parameters() if p.requires_grad]
        task = flat_grads(task_loss, params).float()
        val = self._validation_gradient(learner, params, task_loss.device)
        metrics = {diag_key("norm", TASK): float(task.norm()), diag_key("norm", "val"): float(val.norm())}
        for pid in self.path_ids:
            g = flat_grads(path_losses[pid], params).float()
            weight = float(weights.get(pid, 1.0))
            measured = {"cos_val": cosine(g, val), "cos_task": cosine(g, task), "norm": float(g.norm()),
                        "lookahead": -lr * weight * float(g @ val)}
            self.latest[pid] = measured
            evidence = self.evidence[pid]
            update(evidence, ctx.step, measured["cos_val"], measured["cos_task"], measured["lookahead"], self.rule)
            metrics.update({diag_key(name, pid): value for name, value in measured.items()})
            metrics[diag_key("score", pid)] = evidence.score[-1]
            metrics[diag_key("verdict", pid)] = VERDICT_CODE[evidence.verdict]
            metrics[diag_key("confidence", pid)] = evidence.confidence
        return metrics

    def _validation_gradient(self, learner: "Learner", params: list[torch.nn.Parameter],
                             device: torch.device) -> torch.Tensor:
        x, y = self._next_val_batch()
        student = learner.student
        was_training = student.training
        student.eval()  # BN running statistics must not learn from validation data
        try:
            logits = student(x.to(device))["fc"]
            return flat_grads(F.cross_entropy(logits, y.to(device)), params, retain_graph=False).float()
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
            if batch is not None:
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
        self.evidence = {pid: PathEvidence(**fields) for pid, fields in state["evidence"].items()}
        self._val_epoch = state["val_epoch"]
        self._val_batches = None


def auto_every(num_paths: int) -> int:
    """A cadence whose cost stays near a tenth of training: a probe costs about num_paths + 2 backward passes."""
    return 10 * (num_paths + 2)
