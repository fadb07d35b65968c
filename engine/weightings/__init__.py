"""Weightings: one file each, registered in WEIGHTINGS by the import list below."""
from engine.weightings.registry import WEIGHTINGS

from engine.weightings import (  # noqa: F401  (registers)
    adaptive_distillation, dwa, equal, fixed, gradnorm, lookahead, loss_balance, mgda, pcgrad, uncertainty,
)

__all__ = ["WEIGHTINGS"]
