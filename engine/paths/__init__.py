"""Distillers: one file each, registered in DISTILLERS by the import list below."""
from engine.registry import Registry

DISTILLERS: Registry = Registry("distiller")

from engine.paths import at, cc, crd, dkd, fitnet, fsp, kd, logits, nst, pkt, rkd, sp, vid  # noqa: E402,F401  (registers)
