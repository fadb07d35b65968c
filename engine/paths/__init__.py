"""Distillers: one file each, registered in DISTILLERS by the import list below."""
from engine.paths.registry import DISTILLERS

from engine.paths import (  # noqa: F401  (registers)
    at, cc, crd, dist, dkd, fitnet, fsp, kd, logits, nkd, nst, pkt, rkd, sp, vid, wttm,
)

__all__ = ["DISTILLERS"]
