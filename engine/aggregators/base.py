"""What every aggregator shares.

An aggregator turns the step's named losses ("task" and one "path:<id>" per path) into
the update. The default ``backward`` forms a weighted sum and backpropagates it;
aggregators that edit gradients (PCGrad, MGDA) or reshape the step override it.
Learnable state lives in the module's parameters, is optimised with the student and
saved in its checkpoints.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from engine.paths.base import StepContext

TASK = "task"


def path_key(path_id: str) -> str:
    return f"path:{path_id}"


class Aggregator(nn.Module):
    def __init__(self, path_ids: list[str], path_weights: dict[str, float], **params: Any) -> None:
        """path_weights: each path's configured weight (the spec's, or its distiller's conventional one)."""
        super().__init__()
        if params:
            raise ValueError(f"unknown parameter(s) {sorted(params)}")
        self.path_ids = list(path_ids)
        self.path_weights = dict(path_weights)
        self.task_weight = 1.0  # the task CE keeps weight 1 unless an aggregator says otherwise

    def weights(self, losses: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        """The weight of each path loss for this step (keys are path ids)."""
        raise NotImplementedError

    def combine(self, losses: dict[str, torch.Tensor], ctx: StepContext
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        weights = self.weights(losses, ctx)
        total = self.task_weight * losses[TASK]
        for pid in self.path_ids:
            total = total + weights[pid] * losses[path_key(pid)]
        return total, weights

    def backward(self, losses: dict[str, torch.Tensor], ctx: StepContext
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Backpropagate the step's update; return (total loss, per-path weights) for logging."""
        total, weights = self.combine(losses, ctx)
        total.backward()
        return total, weights
