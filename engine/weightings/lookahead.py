"""Lookahead gating: a path whose share of the update keeps raising held-out loss loses its weight."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import Field

from engine.params import Params
from engine.vocabulary import HELPS
from engine.terms import TermInfo
from engine.weightings.base import Weighting
from engine.weightings.registry import WEIGHTINGS

if TYPE_CHECKING:
    from engine.diagnostics.probe import GradientProbe
    from engine.diagnostics.verdicts import PathEvidence


class LookaheadParams(Params):
    beta: float = Field(0.7, ge=0, lt=1, description="EMA factor of a path's measured relative effect per probe")
    margin: float = Field(0.1, ge=0, lt=1, description="the neutral band around 0, in units of the task's effect")
    rate: float = Field(2.0, gt=0, description="gate change per probe per unit of smoothed signal beyond the band")


@WEIGHTINGS.register("lookahead", "configured weights gated by the probe's measured effect: a path whose share "
                                  "of the update keeps raising validation loss is driven to zero (needs diagnostics)")
class Lookahead(Weighting):
    """Each term weighs w0_k * m_k: its base weight times a gate m_k in [0, 1] driven by the probe.

    Needs ``diagnostics.enabled: true`` (validation says so); without a probe the gates stay 1.
    The probe measures paths, so a term's gate is its path's; a term of several paths or none
    (a method's fused term) keeps its base weight.

    Signal. The probe measures the change of validation loss that each path's share of the update
    causes, e_k, beside the task's own share's, e_task (engine/diagnostics/effect.py). Per probe
    z_k = clamp(-e_k / mean |e_task|, -1, 1) (the mean over the verdict window): +1 when the path
    lowers held-out loss at least as much as a task step does, -1 when it raises it at least that
    much. So magnitude counts (an over-strong push that overshoots reads as harm) and feature paths
    are judged by what they do to the student, not by whether their gradient aligns with a label's.
    s_k <- beta * s_k + (1 - beta) * z_k, starting at 0 (neutral).

    The probe measures a gated path at its base weight (``probe_weights``): a share scaled by a
    closed gate would read 0 and could never tell a silenced harmful path from one that turned
    harmless, so a closed gate could not reopen.

    Gate. m_k <- clamp(m_k + rate * excess(s_k), 0, 1), where excess is s_k's distance beyond the
    neutral band [-margin, margin] (a soft threshold: 0 inside the band). Below the band the gate
    shrinks; above it the gate regrows, at most to 1, but only once the probe's verdict on the path
    is "helps" (``next_gate`` says why); inside it the gate holds. The gate integrates rather than
    mapping s_k to m_k directly so that a silenced path stays silenced until it clearly helps, and a
    neutral path keeps its weight. With the defaults, a path that steadily raises validation loss as
    much as the task lowers it shuts in two probes. Gates and signals are buffers, so checkpoints carry
    them; nothing is random.
    """

    needs_probe = True  # validation refuses it without diagnostics.enabled

    params_model = LookaheadParams

    def __init__(self, terms: list[TermInfo], **params) -> None:
        super().__init__(terms, **params)
        p = self.params
        self.beta, self.margin, self.rate = float(p.beta), float(p.margin), float(p.rate)
        count = len(self.terms)
        self.register_buffer("signal", torch.zeros(count, dtype=torch.float64))  # smoothed relative effect
        self.register_buffer("gate", torch.ones(count, dtype=torch.float64))
        self.gated = [k for k, pid in enumerate(self.paths_of_terms()) if pid is not None]

    def on_probe(self, probe: GradientProbe) -> None:
        paths = self.paths_of_terms()
        window = probe.rule.window
        relative = torch.tensor([relative_benefit(probe.evidence[paths[k]], window) for k in self.gated],
                                dtype=torch.float64)
        signal = self.signal[self.gated].mul(self.beta).add((1.0 - self.beta) * relative.to(self.signal.device))
        self.signal[self.gated] = signal
        helpful = torch.tensor([probe.evidence[paths[k]].verdict == HELPS for k in self.gated])
        self.gate[self.gated] = next_gate(self.gate[self.gated], signal, helpful.to(signal.device), self.margin,
                                          self.rate)

    def probe_weights(self) -> dict[str, float]:
        paths = self.paths_of_terms()
        return {paths[k]: float(self.base[k]) for k in self.gated}

    def weigh(self, values, ctx, grads) -> torch.Tensor:
        return (self.base.double() * self.gate).float()


def relative_benefit(evidence: PathEvidence, window: int) -> float:
    """The last probe's -effect over the task step's typical |effect|, clamped to [-1, 1]: > 0 the path's share
    lowers held-out loss. Typical: the mean over the verdict window, since a single task effect can be near 0 (or
    of either sign) once training settles, and dividing by it would turn a negligible path into a large signal."""
    recent = evidence.task_effect[-window:]
    scale = sum(abs(e) for e in recent) / len(recent)
    if scale == 0.0:
        return 0.0
    return max(-1.0, min(1.0, -evidence.effect[-1] / scale))


def next_gate(gate: torch.Tensor, signal: torch.Tensor, helpful: torch.Tensor, margin: float, rate: float
              ) -> torch.Tensor:
    """Move each gate by the signal's excess beyond the neutral band [-margin, margin], within [0, 1].

    Below the band a gate closes at once; above it, it reopens only for a path the probe judges helpful
    (``helpful``): a silenced harmful teacher's share can lower held-out loss for a while (a student it
    dragged to over-confident wrong answers gains from its softer targets), and reopening on that signal
    alone hands the teacher back its weight, after which it hurts again."""
    excess = torch.sign(signal) * (signal.abs() - margin).clamp(min=0.0)  # soft threshold: 0 inside the band
    opening = torch.where(helpful, excess.clamp(min=0.0), torch.zeros_like(excess))
    return (gate + rate * (excess.clamp(max=0.0) + opening)).clamp(0.0, 1.0)
