"""Aggregators: one file each, registered in AGGREGATORS by the import list below."""
from engine.aggregators.registry import AGGREGATORS

from engine.aggregators import (  # noqa: F401  (registers)
    adaptive_distillation, amtml, dfa, dwa, equal, fixed, gradnorm, lookahead, mgda, pcgrad, sakd, uncertainty,
)

__all__ = ["AGGREGATORS"]
