"""Yu et al. 2020: gradient surgery (PCGrad) between the path gradients."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from engine.params import NoParams
from engine.aggregators.registry import AGGREGATORS
from engine.aggregators.base import TASK, Aggregator, path_key
from engine.gradients import flat_grads, flatten_grads, record_grad_cosines

if TYPE_CHECKING:
    from engine.step import LearnerView as Learner


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


def _write_grads(params: list[nn.Parameter], flat: torch.Tensor) -> None:
    """Add a flat gradient vector to the .grad of the parameters it was flattened from."""
    for param, chunk in zip(params, torch.split(flat, [p.numel() for p in params])):
        _accumulate(param, chunk.view_as(param))


def _accumulate(param: nn.Parameter, grad: torch.Tensor | None) -> None:
    """param.grad += grad, as backward() would (None: the loss does not reach param)."""
    if grad is None:
        return
    if param.grad is None:
        param.grad = grad.detach().clone()
    else:
        param.grad += grad


@AGGREGATORS.register("pcgrad", "PCGrad: project away the conflicting parts of the path gradients")
class PCGrad(Aggregator):
    params_model = NoParams

    """g_k = grad_theta (lambda_k L_k) over the student's parameters theta, lambda_k = path_weights[k];
    for each k, over the other j in random order: if g_k . g_j < 0 then g_k -= (g_k . g_j / ||g_j||^2) g_j;
    the student's gradient is grad_theta CE + sum_k g_k (projected).

    Only the path gradients are projected: the task CE keeps its plain gradient, as if weight 1.
    Parameters only one path touches (each distiller's own adapter) get that path's plain gradient.
    The order is drawn from a generator seeded by the step, so runs and resumes are reproducible.
    The reported weight is lambda_k: the projection changes directions, not loss weights.
    Telemetry: "pcgrad/grad_cosine", the K x K cosines between the path gradients before projection (index -1,
    columns: path ids); a negative entry is a conflict that was projected away.
    """

    def __init__(self, path_ids, path_weights, **unknown) -> None:
        super().__init__(path_ids, path_weights, **unknown)  # unknown parameters raise ValueError
        self._shared: list[nn.Parameter] = []  # plain lists: the student's weights are not the aggregator's
        self._own: dict[str, list[nn.Parameter]] = {pid: [] for pid in self.path_ids}

    def attach(self, learner: "Learner") -> None:
        self._shared = [p for p in learner.student.parameters() if p.requires_grad]
        self._own = {pid: [p for p in learner.distillers[pid].parameters() if p.requires_grad]
                     for pid in self.path_ids}

    def weights(self, losses, ctx) -> dict[str, torch.Tensor]:
        device = losses[TASK].device
        return {pid: torch.tensor(self.path_weights[pid], device=device) for pid in self.path_ids}

    def backward(self, losses, ctx) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not self.path_ids:
            return super().backward(losses, ctx)
        weights = self.weights(losses, ctx)
        n_shared = len(self._shared)
        rows = []
        for pid in self.path_ids:  # one backward per path: its shared gradient and its adapter's
            own = self._own[pid]
            grads = torch.autograd.grad(weights[pid] * losses[path_key(pid)], self._shared + own,
                                        retain_graph=True, allow_unused=True)
            rows.append(flatten_grads(grads[:n_shared], self._shared))
            for param, grad in zip(own, grads[n_shared:]):
                _accumulate(param, grad)
        grads = torch.stack(rows)
        record_grad_cosines(ctx, "pcgrad/grad_cosine", grads @ grads.T, self.path_ids)
        projected = project_conflicting(grads, torch.Generator().manual_seed(ctx.step))
        _write_grads(self._shared, flat_grads(losses[TASK], self._shared) + projected.sum(0))
        total = losses[TASK] + sum(weights[pid] * losses[path_key(pid)] for pid in self.path_ids)
        ctx.mark("aggregator")  # the per-path backward passes are PCGrad's own cost
        return total.detach(), weights
