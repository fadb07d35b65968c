"""Aggregators: one file each, registered in AGGREGATORS by the import list below."""
from engine.registry import Registry

AGGREGATORS: Registry = Registry("aggregator")

from engine.aggregators import (  # noqa: E402,F401  (registers)
    adaptive_distillation, amtml, dfa, dwa, equal, fixed, gradnorm, lookahead, mgda, pcgrad, sakd, uncertainty,
)
