"""Path methods: one file each, registered in METHODS by the import list below. A run without one uses
``engine.methods.base.PathMethod`` (each path's distiller on the whole batch)."""
from engine.methods.registry import METHODS

from engine.methods import (  # noqa: F401  (registers)
    amtml, camkd, dfa, ebkd, min_ce, sakd,
)

__all__ = ["METHODS"]
