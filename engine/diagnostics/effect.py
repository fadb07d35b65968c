"""The direct measure of a path's effect: how much its share of a real update changes validation loss.

At a probe every term (the task and each path) has a share of the step the student is about to take:
its weighted gradient sent through the optimizer's step rule at the current learning rate
(``step_rule.StepRule``). For Adam, whose step is not linear in the gradient, a share is the term's
marginal part of the whole step, U(G) - U(G - w_k g_k); for SGD that is exactly -lr * w_k * g_k.

Each share is applied to a copy of the student's weights, the validation loss is measured on held-out
samples, and nothing of the live student changes (``torch.func.functional_call`` evaluates the copy;
the student stays in eval mode meanwhile, so batch-norm statistics do not move). The effect is the
change of validation loss in nats, so it sees magnitude: a path pushing 10x harder in the same direction
reports about 10x the effect, and one whose push overshoots reports the overshoot. The held-out samples
are split into chunks; the spread of the effect across chunks is its standard error.

Interaction-aware attribution: effects are measured around the update the student would take without
the paths already judged harmful. The base point is theta + the task's share + the shares of the
trusted (not flagged) paths; a trusted path's effect is base - (base without its share), a flagged
path's is (base with its share) - base. A harmful teacher therefore never sits inside the reference a
good path is judged against, and a good path's verdict does not depend on whether a bad one is present
in this step (on digits, a label-permuted teacher made the good teacher's feature path look harmful to
the cosine score in 6 of 6 runs). Adapters (FitNet regressors and the like) move with their path too,
but they do not enter the student's validation loss, so only the student's weights are stepped.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.func import functional_call

from engine.diagnostics.step_rule import StepRule


@dataclass(frozen=True)
class Effect:
    mean: float  # change of validation loss (nats) caused by the share, averaged over the chunks
    se: float  # its standard error across the chunks (0 with one chunk)


def term_shares(rule: StepRule, grads: dict[str, torch.Tensor], weights: dict[str, float]) -> dict[str, torch.Tensor]:
    """Each term's share of the update: the whole step minus the step without its weighted gradient."""
    weighted = {name: weights[name] * g for name, g in grads.items()}
    whole = torch.stack(list(weighted.values())).sum(0)
    full_step = rule.update(whole)
    return {name: full_step - rule.update(whole - g) for name, g in weighted.items()}


def measure_effects(model: torch.nn.Module, params: list[torch.nn.Parameter], shares: dict[str, torch.Tensor],
                    context: list[str], x: torch.Tensor, y: torch.Tensor, chunks: int) -> dict[str, Effect]:
    """The effect of every share on the validation loss of ``model`` (whose trained weights are ``params``).

    context: the terms whose shares form the base point (the task and the trusted paths)."""
    names = _parameter_names(model, params)
    base = torch.stack([shares[name] for name in context]).sum(0) if context else torch.zeros_like(
        next(iter(shares.values())))
    was_training = model.training
    model.eval()  # batch-norm statistics must not learn from validation data
    try:
        with torch.no_grad():
            at_base = _chunk_losses(model, names, params, base, x, y, chunks)
            effects = {}
            for name, share in shares.items():
                if name in context:
                    effects[name] = _difference(at_base, _chunk_losses(model, names, params, base - share, x, y, chunks))
                else:
                    effects[name] = _difference(_chunk_losses(model, names, params, base + share, x, y, chunks), at_base)
            return effects
    finally:
        model.train(was_training)


def _parameter_names(model: torch.nn.Module, params: list[torch.nn.Parameter]) -> list[str]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    missing = [i for i, p in enumerate(params) if id(p) not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} probed parameters do not belong to the evaluated model")
    return [by_id[id(p)] for p in params]


def _chunk_losses(model: torch.nn.Module, names: list[str], params: list[torch.nn.Parameter], offset: torch.Tensor,
                  x: torch.Tensor, y: torch.Tensor, chunks: int) -> torch.Tensor:
    """Mean cross-entropy of each chunk of (x, y) with the weights params + offset (float64, one per chunk)."""
    moved, start = {}, 0
    for name, param in zip(names, params):
        size = param.numel()
        moved[name] = param.detach() + offset[start:start + size].view_as(param).to(param.dtype)
        start += size
    logits = functional_call(model, moved, (x,))
    losses = F.cross_entropy(logits.double(), y, reduction="none")
    return torch.stack([piece.mean() for piece in torch.tensor_split(losses, chunks)])


def _difference(after: torch.Tensor, before: torch.Tensor) -> Effect:
    change = after - before
    se = float(change.std(unbiased=True) / len(change) ** 0.5) if len(change) > 1 else 0.0
    return Effect(float(change.mean()), se)
