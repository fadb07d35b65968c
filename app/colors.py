"""Fixed colours, so a series looks the same on every page.

A path's colour is picked by its position in the run spec's path list (not by its id's
hash), so the first path of every run is the same colour and colours never collide
within a run of up to ``len(PALETTE)`` paths.
"""
from __future__ import annotations

import zlib

from plotly.colors import sample_colorscale

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


# Terms that are neither the task nor one path's own (a method's fused KD, a weighting's regulariser):
# Paul Tol's darker muted hues, which the path palette does not use.
TERM_PALETTE: tuple[str, ...] = ("#332288", "#117733", "#882255", "#999933", "#AA4499", "#44AA99", "#661100")


def term_colors(names: list[str]) -> dict[str, str]:
    """A colour per term name, the same for a name in every run: picked by a hash of the name, moving on to
    the next free colour when two names of one run would share it (until the palette is used up)."""
    taken: dict[str, str] = {}
    for name in sorted(names):
        start = zlib.crc32(name.encode())
        free = [TERM_PALETTE[(start + i) % len(TERM_PALETTE)] for i in range(len(TERM_PALETTE))]
        taken[name] = next((c for c in free if c not in taken.values()), free[0])
    return taken


def path_color(path_id: str, path_ids: list[str]) -> str:
    """Colour of a path, by its position in the spec's path list.

    A path missing from the list (a spec edited after logging) goes after the known ones
    rather than failing, so old runs still draw.
    """
    index = path_ids.index(path_id) if path_id in path_ids else len(path_ids)
    return series_color(index)


# Teachers: Dark2-like hues that Tableau 10 (the path palette) does not use, so a teacher is
# never mistaken for a path on pages that show both.
TEACHER_PALETTE: tuple[str, ...] = ("#1B9E77", "#7570B3", "#E7298A", "#8C510A", "#3F007D", "#66A61E")
# Classes only ever colour sample points, never paths or teachers.
CLASS_PALETTE: tuple[str, ...] = (
    "#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A",
    "#19D3F3", "#FF6692", "#B6E880", "#FF97FF", "#FECB52",
)
# Spots and layer groups are ordered shallow -> deep, so a sequential scale shows the depth.
DEPTH_SCALE = "Viridis"
DEPTH_SCALE_END = 0.85  # stop before Viridis' yellow, which is unreadable on white
# Routing decisions: grey = the student's own block, dark blue = distilled from the teacher.
# A step scale: decisions are 0 or 1, so the colour bar must not suggest values in between.
DECISION_SCALE: list[list] = [[0.0, "#E5E7EB"], [0.5, "#E5E7EB"], [0.5, "#08306B"], [1.0, "#08306B"]]
# Shares in [0, 1] (DFA's alphas, spot use): white = 0 so empty cells recede.
SHARE_SCALE = "Blues"


# Negative-transfer verdicts: red hurts, grey neutral, green helps (a path with no verdict is light grey).
VERDICT_COLORS: dict[str, str] = {"hurts": "#D62728", "neutral": "#8C8C8C", "helps": "#2CA02C"}
NO_VERDICT_COLOR = "#C7C7C7"
# Diverging scale for signed measurements centred on 0; red is always the harmful end.
DIVERGING_SCALE = "RdBu"


def verdict_color(verdict: str | None) -> str:
    return VERDICT_COLORS.get(verdict or "", NO_VERDICT_COLOR)


# Step-time sections (data, teachers, ...): ColorBrewer Set2, hues that neither paths nor teachers use.
SECTION_COLORS: dict[str, str] = {
    "data": "#66C2A5", "teachers": "#FC8D62", "student": "#8DA0CB",
    "paths": "#E78AC3", "aggregator": "#A6D854", "backward": "#E5C494", "diagnostics": "#FFD92F",
}
OTHER_SECTION_COLOR = "#B3B3B3"


def section_color(section: str) -> str:
    return SECTION_COLORS.get(section, OTHER_SECTION_COLOR)


def teacher_color(teacher_id: str, teacher_ids: list[str]) -> str:
    """Colour of a teacher, by its position in the spec's teacher list (unknown ones go after)."""
    index = teacher_ids.index(teacher_id) if teacher_id in teacher_ids else len(teacher_ids)
    return TEACHER_PALETTE[index % len(TEACHER_PALETTE)]


def class_color(label: int) -> str:
    return CLASS_PALETTE[label % len(CLASS_PALETTE)]


def depth_colors(n: int) -> list[str]:
    """n colours from shallow to deep along the sequential depth scale."""
    positions = [DEPTH_SCALE_END * i / max(n - 1, 1) for i in range(n)]
    return sample_colorscale(DEPTH_SCALE, positions)
