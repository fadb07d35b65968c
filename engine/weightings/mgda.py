"""Sener & Koltun 2018: multiple-gradient descent (MGDA / MGDA-UB) over the distillation terms."""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from engine.gradients import flat_grads, record_grad_cosines
from engine.params import Params
from engine.terms import TermInfo
from engine.vocabulary import LOGITS_SPOT
from engine.weightings.base import Weighting
from engine.weightings.registry import WEIGHTINGS

if TYPE_CHECKING:
    from engine.step import LearnerView as Learner


def _best_pair(gram: torch.Tensor) -> torch.Tensor:
    """The smallest-norm point over all two-vector segments (exact for K = 2; the Frank-Wolfe start for more).

    On the segment gamma g_i + (1 - gamma) g_j the norm is smallest at gamma = (G_jj - G_ij) / ||g_i - g_j||^2.
    """
    k = gram.shape[0]
    diag = gram.diagonal()
    gii, gjj = diag[:, None], diag[None, :]
    gap = gii + gjj - 2 * gram  # ||g_i - g_j||^2
    same = gap <= 1e-12 * (gii + gjj)  # g_i == g_j (or both zero): the whole segment is one point
    safe_gap = torch.where(same, torch.ones_like(gap), gap)
    gamma = torch.where(same, torch.ones_like(gram), ((gjj - gram) / safe_gap).clamp(0, 1))
    norms = gamma**2 * gii + 2 * gamma * (1 - gamma) * gram + (1 - gamma) ** 2 * gjj
    upper = torch.triu(torch.ones_like(gram, dtype=torch.bool), diagonal=1)
    best = int(torch.argmin(norms.where(upper, torch.full_like(norms, torch.inf))))
    i, j = divmod(best, k)
    alpha = torch.zeros(k, dtype=gram.dtype, device=gram.device)
    alpha[i], alpha[j] = gamma[i, j], 1 - gamma[i, j]
    return alpha


def min_norm_point(gram: torch.Tensor, iterations: int = 50, tolerance: float = 1e-9) -> torch.Tensor:
    """alpha = argmin over the simplex of ||sum_k alpha_k g_k||^2, given the Gram matrix G_ij = g_i . g_j.

    Exact for one or two vectors. For more: Frank-Wolfe with exact line search started at the best
    pair, with away steps (Lacoste-Julien & Jaggi 2015) so it converges linearly instead of zig-zagging
    when the answer drops a vector; at most `iterations` steps, stopping once the Frank-Wolfe gap falls
    below `tolerance` times the squared norm. Gradient vectors v (K, P) give their Gram matrix as v @ v.T.
    """
    gram = gram.detach().double()
    k = gram.shape[0]
    if k == 1:
        return torch.ones(1, dtype=gram.dtype, device=gram.device)
    alpha = _best_pair(gram)
    for _ in range(iterations if k > 2 else 0):
        g_alpha = gram @ alpha  # (sum_i alpha_i g_i) . g_t for every t: half the gradient in alpha
        norm = alpha @ g_alpha
        toward = int(torch.argmin(g_alpha))
        away = int(torch.argmax(torch.where(alpha > 0, g_alpha, torch.full_like(g_alpha, -torch.inf))))
        toward_gap, away_gap = norm - g_alpha[toward], g_alpha[away] - norm
        if max(toward_gap, away_gap) <= tolerance * norm:
            break
        if toward_gap >= away_gap:  # move toward the vertex most opposed to the current point
            direction, max_step = -alpha, torch.ones_like(norm)
            direction[toward] += 1
        else:  # move mass off the supported vertex most aligned with it
            direction, max_step = alpha.clone(), alpha[away] / (1 - alpha[away])
            direction[away] -= 1
        curvature = direction @ gram @ direction
        step = max_step if curvature <= 0 else (-(g_alpha @ direction) / curvature).clamp(0.0, max_step)
        alpha = (alpha + step * direction).clamp_min(0.0)
        if toward_gap < away_gap and step == max_step:
            alpha[away] = 0.0  # a full away step drops the vertex exactly
    return alpha / alpha.sum()


class MGDAParams(Params):
    space: Literal["params", "logits"] = Field(
        "params", description="gradients w.r.t. every student parameter (exact) or the student's logits (cheap)")
    iterations: int = Field(50, ge=1, description="Frank-Wolfe iterations of the min-norm solver")


@WEIGHTINGS.register("mgda", "MGDA: path weights from the min-norm point of the path gradients (Pareto descent)")
class MGDA(Weighting):
    """alpha = argmin_{alpha in simplex} || sum_k alpha_k g_k ||^2;  L = CE + sum_k (K alpha_k) L_k.

    g_k is the gradient of term k with respect to
      space "params" (default): every student parameter, flattened: exact MGDA (the loop builds these
          gradients once and hands them to weigh). In PathScope paths tap different student layers, so
          there is no single shared representation Z; a path that taps an early layer simply has zero
          gradient on the later ones.
      space "logits": the student's fc tap (per-sample logits), the paper's MGDA-UB upper bound: one
          cheap backward through the distillers; it needs every term to be a path's that ends at the
          student's fc.
    The min-norm point is exact for two terms and Frank-Wolfe (`iterations` steps) for more; unlike the
    authors' plain Frank-Wolfe it also takes away steps, which converge linearly (see min_norm_point).
    Deviations from the paper: the task CE stays outside the min-norm problem with weight 1, and the
    weights are K alpha_k instead of alpha_k, so uniform alpha is exactly the "equal" weighting;
    gradients are not normalised and base weights are ignored.
    Telemetry: "mgda/grad_cosine", the K x K cosines between the term gradients (index -1, columns: term names).
    """

    params_model = MGDAParams

    def __init__(self, terms: list[TermInfo], **params) -> None:
        super().__init__(terms, **params)
        self.space = self.params.space
        self.iterations = self.params.iterations
        self.needs_gradients = self.space == "params"  # "logits" takes its own, cheaper gradients

    def attach(self, learner: "Learner") -> None:
        if self.space == "logits":
            off = [t.name for t in self.terms
                   if t.path is None or learner.path_spots[t.path].student_spot != LOGITS_SPOT]
            if off:
                raise ValueError(f"space 'logits' needs every term to be a path's that reads the student's "
                                 f"{LOGITS_SPOT} spot; these are not: {', '.join(off)} (use space 'params')")

    def weigh(self, values, ctx, grads) -> torch.Tensor:
        if grads is None:  # space "logits"
            logits = [ctx.student_taps[LOGITS_SPOT]]
            grads = torch.stack([flat_grads(value, logits) for value in values.unbind()])
        gram = grads @ grads.T
        record_grad_cosines(ctx, "mgda/grad_cosine", gram, self.names)
        alpha = min_norm_point(gram, self.iterations)
        return (len(self.terms) * alpha).to(grads.dtype)
