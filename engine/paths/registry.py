"""DISTILLERS, the distiller registry, in a leaf module.

Each distiller module registers itself here; ``engine/paths/__init__.py`` loads them through one
explicit import list. Distillers import this module, never the package, so no module imports one that
imports it back.
"""
from engine.registry import Registry

DISTILLERS: Registry = Registry("distiller")
