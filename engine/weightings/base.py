"""What every weighting shares.

A weighting turns the step's weighable terms (a path method's distillation terms, in a fixed order) into
one weight each; the training loop then backpropagates ``task + sum_k w_k L_k + the weighting's own terms``.
Hooks, in the order a run calls them (each but ``weigh`` has a do-nothing default):

    attach(learner)                the student's parameters, distillers' adapters (before the optimizer exists)
    own_terms()                    terms it adds itself, e.g. ``uncertainty/reg`` (weight 1, never re-weighed)
    weigh(values, ctx, grads)      the (K,) weights of this step; ``grads`` is the (K, P) matrix of the terms'
                                   gradients on the student's parameters when ``needs_gradients`` (built once
                                   by the loop), else None
    own_values(values, ctx)        the values of own_terms() for this step
    edit_gradient(grads, w, ctx)   gradient surgery (PCGrad): the (P,) gradient to use instead of sum_k w_k g_k
    observe(values)                after the backward: the step's (detached) values (DWA's epoch means)
    learners()                     parts with optimizers of their own, stepped by the loop (GradNorm's weights)
    on_epoch_end(epoch), on_probe(probe)

Learnable state lives in the module (parameters and buffers), so checkpoints carry it. Parameters outside
``learners()`` train with the student's optimizer, without weight decay (uncertainty's log-variances).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from engine.params import NoParams, Params, parse_params
from engine.step import StepContext
from engine.terms import OwnLearner, TermInfo
from engine.vocabulary import TelemetryPanel

if TYPE_CHECKING:
    from engine.diagnostics.probe import GradientProbe
    from engine.step import LearnerView as Learner


class Weighting(nn.Module):
    #: True: weigh() gets the (K, P) gradients of the weighable terms on the student's trainable parameters
    needs_gradients: bool = False
    #: True when the weighting is driven by the negative-transfer probe (diagnostics must be on)
    needs_probe: bool = False
    #: the arrays it records and how Teacher importance draws them (None: records none)
    telemetry: TelemetryPanel | None = None
    #: the parameters ``weighting.params`` may set (defaults, bounds, descriptions); see engine.params
    params_model: type[Params] = NoParams
    #: multiplies the task term's base weight (fixed's task_weight: RepDistiller's KD recipe uses 0.1)
    task_weight: float = 1.0

    def __init__(self, terms: list[TermInfo], **params: Any) -> None:
        """terms: the weighable terms, in the order of the values weigh() gets and the weights it returns."""
        super().__init__()
        self.params = parse_params(type(self).params_model, params)
        self.terms = list(terms)
        self.names = [t.name for t in self.terms]
        # configuration, not state: the spec re-creates it, so checkpoints leave it out
        self.register_buffer("base", torch.tensor([t.weight for t in self.terms], dtype=torch.float32),
                             persistent=False)

    # ------------------------------------------------------------ set-up
    def attach(self, learner: "Learner") -> None:
        """Called once the learner exists, before the optimizer is made."""

    def own_terms(self) -> list[TermInfo]:
        return []

    def learners(self) -> list[OwnLearner]:
        return []

    # ------------------------------------------------------------ step
    def weigh(self, values: torch.Tensor, ctx: StepContext, grads: torch.Tensor | None) -> torch.Tensor:
        """(K,) weights of the (K,) term values; may carry a gradient (a learnt weight)."""
        raise NotImplementedError

    def own_values(self, values: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        return {}

    def edit_gradient(self, grads: torch.Tensor, weights: torch.Tensor, ctx: StepContext) -> torch.Tensor | None:
        """None, or the (P,) shared gradient that replaces sum_k weights_k grads_k (gradient surgery)."""
        return None

    def observe(self, values: torch.Tensor) -> None:
        """After the step's backward, with its detached (K,) values."""

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each training epoch of the main phase."""

    def on_probe(self, probe: "GradientProbe") -> None:
        """Called after each negative-transfer probe (probe.evidence holds every path's measurements so far)."""

    def probe_weights(self) -> dict[str, float]:
        """Path id -> the weight the probe should measure the path's share at, where not the step's own weight."""
        return {}

    # ------------------------------------------------------------ helpers for subclasses
    def ones(self) -> torch.Tensor:
        return torch.ones_like(self.base)

    def paths_of_terms(self) -> list[str | None]:
        return [t.path for t in self.terms]
