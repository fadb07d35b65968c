"""WEIGHTINGS, the weighting registry, in a leaf module.

Each weighting module registers itself here; ``engine/weightings/__init__.py`` loads them through one
explicit import list. Weightings import this module, never the package, so no module imports one that
imports it back.
"""
from engine.registry import Registry

WEIGHTINGS: Registry = Registry("weighting")
