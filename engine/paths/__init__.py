"""Distillers: one file each, registered in DISTILLERS by the import list below."""
from engine.paths.registry import DISTILLERS

from engine.paths import at, cc, crd, dkd, fitnet, fsp, kd, logits, nst, pkt, rkd, sp, vid  # noqa: F401  (registers)

__all__ = ["DISTILLERS"]
