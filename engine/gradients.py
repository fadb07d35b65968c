"""Gradient helpers shared by the gradient-based weightings (MGDA, PCGrad, GradNorm), the loop's gradient matrix (engine/objective.py) and the negative-transfer
probe: one copy, in a neutral home."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from engine.step import StepContext


def flatten_grads(grads: tuple[torch.Tensor | None, ...], inputs: list[torch.Tensor]) -> torch.Tensor:
    """Gradients as one flat vector, with zeros for the inputs a loss does not reach (None)."""
    return torch.cat([(g if g is not None else torch.zeros_like(x)).reshape(-1) for g, x in zip(grads, inputs)])


def flat_grads(loss: torch.Tensor, inputs: list[torch.Tensor], retain_graph: bool = True) -> torch.Tensor:
    """d loss / d inputs as one flat vector; by default keeps the graph for the step's other backward passes."""
    return flatten_grads(torch.autograd.grad(loss, inputs, retain_graph=retain_graph, allow_unused=True), inputs)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(a, b) of two flat vectors; 0 when either is zero or a norm is not finite."""
    denominator = float(a.norm()) * float(b.norm())
    return float(a @ b) / denominator if denominator > 0 and math.isfinite(denominator) else 0.0


def record_grad_cosines(ctx: "StepContext", key: str, gram: torch.Tensor, path_ids: list[str]) -> None:
    """Telemetry `key`: the K x K cosines between path gradients (rows belong to no sample: index -1)."""
    if ctx.telemetry.due:
        norms = gram.diagonal().clamp_min(0).sqrt().clamp_min(1e-30)
        cosine = gram / (norms[:, None] * norms[None, :])
        ctx.telemetry.record(key, cosine, torch.full((len(path_ids),), -1), columns=path_ids)
