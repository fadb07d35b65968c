"""AGGREGATORS, the aggregator registry, in a leaf module.

Each aggregator module registers itself here; ``engine/aggregators/__init__.py`` loads them through one
explicit import list. Aggregators import this module, never the package, so no module imports one that
imports it back.
"""
from engine.registry import Registry

AGGREGATORS: Registry = Registry("aggregator")
