"""Aggregators: one file each, registered in AGGREGATORS by the import list below."""
from engine.registry import Registry

AGGREGATORS: Registry = Registry("aggregator")

from engine.aggregators import equal, fixed  # noqa: E402,F401  (registers)
