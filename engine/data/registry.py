"""DATASETS, the dataset registry, in a leaf module.

Each dataset module registers its loader here; ``engine/data/__init__.py`` loads them through one
explicit import list. Dataset modules import this module, never the package, so no module imports one
that imports it back.
"""
from engine.registry import Registry

DATASETS: Registry = Registry("dataset")
