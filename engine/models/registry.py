"""MODELS, the model registry, in a leaf module.

Each architecture module registers its builders here; ``engine/models/__init__.py`` loads them through
one explicit import list and adds the torchvision/timm families. Architecture modules import this module,
never the package, so no module imports one that imports it back.
"""
from engine.registry import Registry

MODELS: Registry = Registry("model")
