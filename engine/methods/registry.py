"""METHODS, the path-method registry, in a leaf module.

Each path method registers itself here; ``engine/methods/__init__.py`` loads them through one explicit
import list. Methods import this module, never the package, so no module imports one that imports it back.
"""
from engine.registry import Registry

METHODS: Registry = Registry("method")
