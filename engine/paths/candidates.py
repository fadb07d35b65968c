"""Candidate paths for a teacher/student pair: the natural matches a user starts editing from.

Logits go to logits, the pooled embedding to the pooled embedding, and the deepest student
feature-map stage of each spatial size to the deepest teacher stage of that size. Each candidate
lists every registered distiller that accepts those spot kinds and shapes, the first
being the suggestion.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.models.spots import SpotInfo
from engine.paths import DISTILLERS
from engine.vocabulary import LOGITS_SPOT, POOL_SPOT

#: preferred distillers per spot kind, best-known first (others that fit follow)
PREFERRED = {
    "logits": ("kd", "dkd", "logits"),
    "embedding": ("rkd", "pkt", "crd", "cc", "sp"),
    "feature_map": ("at", "fitnet", "nst", "vid", "sp"),
}


@dataclass(frozen=True)
class Candidate:
    teacher_spot: SpotInfo
    student_spot: SpotInfo
    distillers: tuple[str, ...]  # all that fit, the suggestion first

    def path_id(self, teacher_id: str, distiller: str) -> str:
        if self.teacher_spot.name == self.student_spot.name:
            return f"{teacher_id}-{distiller}-{self.student_spot.name}"
        return f"{teacher_id}-{distiller}-{self.teacher_spot.name}-{self.student_spot.name}"


def fitting_distillers(teacher: SpotInfo, student: SpotInfo) -> tuple[str, ...]:
    """Registered single-spot distillers that accept both spots, preferred ones first."""
    if teacher.kind != student.kind:
        return ()
    preferred = [d for d in PREFERRED.get(teacher.kind, ()) if d in DISTILLERS]
    others = [d for d in DISTILLERS.names() if d not in preferred]
    fitting = []
    for name in preferred + others:
        cls = DISTILLERS.get(name)
        if cls.spots_per_side == 1 and teacher.kind in cls.accepts \
                and cls.shape_problem(student.shape, teacher.shape) is None:
            fitting.append(name)
    return tuple(fitting)


def _matched_pairs(teacher: list[SpotInfo], student: list[SpotInfo]) -> list[tuple[SpotInfo, SpotInfo]]:
    pairs = []
    for i, s in enumerate(student):
        if s.kind == "feature_map":
            if any(later.kind == "feature_map" and later.shape[1:] == s.shape[1:] for later in student[i + 1:]):
                continue  # a stem at a stage's resolution: only the deepest stage per resolution pairs up
            matches = [t for t in teacher if t.kind == "feature_map" and t.shape[1:] == s.shape[1:]]
        elif s.name in (POOL_SPOT, LOGITS_SPOT):
            matches = [t for t in teacher if t.name == s.name]
        else:
            continue  # intermediate embeddings (an MLP's hidden layers) are not natural candidates
        if matches:
            pairs.append((matches[-1], s))  # the deepest teacher spot that matches
    return pairs


def propose_candidates(teacher: list[SpotInfo], student: list[SpotInfo]) -> list[Candidate]:
    """Natural teacher->student matches in student order, each with the distillers that fit it."""
    candidates = []
    for t, s in _matched_pairs(teacher, student):
        distillers = fitting_distillers(t, s)
        if distillers:
            candidates.append(Candidate(t, s, distillers))
    return candidates
