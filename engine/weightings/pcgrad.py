"""Yu et al. 2020: gradient surgery (PCGrad) between the distillation terms' gradients."""
from __future__ import annotations

import torch

from engine.gradients import record_grad_cosines
from engine.params import NoParams
from engine.weightings.base import Weighting
from engine.weightings.registry import WEIGHTINGS


def project_conflicting(grads: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PCGrad on the rows of grads (K, P): each g_k, against the other original g_j in random order,
    loses its component along g_j whenever g_k . g_j < 0. Rows that conflict with nobody pass unchanged."""
    k = grads.shape[0]
    sq_norms = (grads * grads).sum(1).clamp_min(torch.finfo(grads.dtype).tiny)  # a zero g_j has dot 0: no-op
    projected = grads.clone()
    for i in range(k):
        for j in torch.randperm(k, generator=generator).tolist():
            if j == i:
                continue
            dot = projected[i] @ grads[j]
            projected[i] -= dot.clamp(max=0.0) / sq_norms[j] * grads[j]
    return projected


@WEIGHTINGS.register("pcgrad", "PCGrad: project away the conflicting parts of the path gradients")
class PCGrad(Weighting):
    """g_k = grad_theta (lambda_k L_k) over the student's parameters theta, lambda_k = the term's base weight;
    for each k, over the other j in random order: if g_k . g_j < 0 then g_k -= (g_k . g_j / ||g_j||^2) g_j;
    the student's gradient is grad_theta CE + sum_k g_k (projected).

    Only the terms' gradients on the student are projected: the task CE keeps its plain gradient, as if
    weight 1. Parameters outside the student (each distiller's own adapter) get their plain gradient
    from the step's one backward; the loop then replaces sum_k g_k on the student by the projected sum.
    The order is drawn from a generator seeded by the step, so runs and resumes are reproducible.
    The weight is lambda_k: the projection changes directions, not loss weights.
    Telemetry: "pcgrad/grad_cosine", the K x K cosines between the term gradients before projection (index -1,
    columns: term names); a negative entry is a conflict that was projected away.
    """

    needs_gradients = True
    params_model = NoParams

    def weigh(self, values, ctx, grads) -> torch.Tensor:
        return self.base

    def edit_gradient(self, grads, weights, ctx) -> torch.Tensor:
        rows = weights.to(grads.dtype)[:, None] * grads
        record_grad_cosines(ctx, "pcgrad/grad_cosine", rows @ rows.T, self.names)
        return project_conflicting(rows, torch.Generator().manual_seed(ctx.step)).sum(0)
