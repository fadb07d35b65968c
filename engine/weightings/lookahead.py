"""Lookahead gating: a path that keeps pointing against the task loses its weight, helpful paths keep theirs."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import Field

from engine.params import Params
from engine.terms import TermInfo
from engine.weightings.base import Weighting
from engine.weightings.registry import WEIGHTINGS

if TYPE_CHECKING:
    from engine.diagnostics.probe import GradientProbe


class LookaheadParams(Params):
    beta: float = Field(0.7, ge=0, lt=1, description="EMA factor of a path's agreement score per probe")
    margin: float = Field(0.15, ge=0, lt=1, description="the neutral band around 0 (the verdicts' default)")
    rate: float = Field(4.0, gt=0, description="gate change per probe per unit of smoothed score beyond the band")


@WEIGHTINGS.register("lookahead", "configured weights gated by the probe's measured agreement: a path that "
                                  "keeps raising validation loss is driven to zero (needs diagnostics)")
class Lookahead(Weighting):
    """Each term weighs w0_k * m_k: its base weight times a gate m_k in [0, 1] driven by the probe.

    Needs ``diagnostics.enabled: true`` (validation says so); without a probe the gates stay 1.
    The probe measures paths, so a term's gate is its path's; a term of several paths or none
    (a method's fused term) keeps its base weight.

    Signal. After each probe, s_k <- beta * s_k + (1 - beta) * score_k (s_k starts at 0, neutral),
    where score_k is the verdicts' agreement score: the mean of the path gradient's cosine with
    the task gradient on the batch and with the task gradient on a validation batch. The score
    rather than the sign of the lookahead -lr * w * g_path . g_val, because
      - the lookahead is scaled by the path's current weight: once a gate closes it reads 0 and
        cannot tell a silenced harmful path from one that turned neutral, while the cosines are
        measured on the raw path gradient, so a closed gate can still reopen;
      - its sign is the sign of cos_val alone, noisy early on for every path, while a harmful
        teacher already opposes the batch's own task gradient (see verdicts.py);
      - it is what the verdicts judge, so a closing gate and a "hurts" flag agree.

    Gate. m_k <- clamp(m_k + rate * excess(s_k), 0, 1), where excess is s_k's distance beyond
    the verdicts' neutral band [-margin, margin] (a soft threshold: 0 inside the band). Below the
    band (the path clearly opposes the task) the gate shrinks; above it (clearly helps) the gate
    regrows, at most to 1; inside it the gate holds. The gate integrates rather than mapping s_k
    to m_k directly because a path's score depends on its own weight: silencing a harmful teacher
    lets the student drift away from it, and its disagreement fades into the neutral band (on
    digits, a label-permuted teacher's score goes from about -0.3 to about -0.1..0 once its gate
    is shut). A direct map would settle where that faded score sits on the map and hand the
    harmful path back a partial weight, after which it hurts again. With the band as a hold
    zone, a silenced path stays silenced until it clearly helps, and a neutral path keeps its
    weight. With the defaults, steady scores of -0.5 shut a gate in three probes; a gate reopens
    only as fast as the EMA forgets, never on one good probe. Gates and signals are buffers, so
    checkpoints carry them; nothing is random.
    """

    needs_probe = True  # validation refuses it without diagnostics.enabled

    params_model = LookaheadParams

    def __init__(self, terms: list[TermInfo], **params) -> None:
        super().__init__(terms, **params)
        p = self.params
        self.beta, self.margin, self.rate = float(p.beta), float(p.margin), float(p.rate)
        count = len(self.terms)
        self.register_buffer("signal", torch.zeros(count, dtype=torch.float64))  # smoothed agreement score
        self.register_buffer("gate", torch.ones(count, dtype=torch.float64))
        self.gated = [k for k, pid in enumerate(self.paths_of_terms()) if pid is not None]

    def on_probe(self, probe: GradientProbe) -> None:
        paths = self.paths_of_terms()
        scores = torch.tensor([probe.evidence[paths[k]].score[-1] for k in self.gated], dtype=torch.float64)
        signal = self.signal[self.gated].mul(self.beta).add((1.0 - self.beta) * scores.to(self.signal.device))
        self.signal[self.gated] = signal
        self.gate[self.gated] = next_gate(self.gate[self.gated], signal, self.margin, self.rate)

    def weigh(self, values, ctx, grads) -> torch.Tensor:
        return (self.base.double() * self.gate).float()


def next_gate(gate: torch.Tensor, signal: torch.Tensor, margin: float, rate: float) -> torch.Tensor:
    """Move each gate by the signal's excess beyond the neutral band [-margin, margin]; stay within [0, 1]."""
    excess = torch.sign(signal) * (signal.abs() - margin).clamp(min=0.0)  # soft threshold: 0 inside the band
    return (gate + rate * excess).clamp(0.0, 1.0)
