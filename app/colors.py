"""Fixed colours, so a series looks the same on every page.

A path's colour is picked by its position in the run spec's path list (not by its id's
hash), so the first path of every run is the same colour and colours never collide
within a run of up to ``len(PALETTE)`` paths.
"""
from __future__ import annotations

# Tableau 10 without its grey: grey and black are reserved for the task and total losses.
PALETTE: tuple[str, ...] = (
    "#4E79A7", "#F28E2B", "#E15759", "#76B7B2", "#59A14F",
    "#EDC948", "#B07AA1", "#FF9DA7", "#9C755F",
)
TOTAL_LOSS_COLOR = "#1F1F1F"
TASK_LOSS_COLOR = "#8C8C8C"
# Accuracy splits are never drawn next to path series, so shades of one hue read as "one model".
SPLIT_COLORS: dict[str, str] = {"train": "#9ECAE1", "val": "#3182BD", "test": "#08306B"}


def series_color(index: int) -> str:
    """The palette colour for the index-th series (wraps around)."""
    return PALETTE[index % len(PALETTE)]


def path_color(path_id: str, path_ids: list[str]) -> str:
    """Colour of a path, by its position in the spec's path list.

    A path missing from the list (a spec edited after logging) goes after the known ones
    rather than failing, so old runs still draw.
    """
    index = path_ids.index(path_id) if path_id in path_ids else len(path_ids)
    return series_color(index)
