"""How a metric key reads on a chart: its title in words, its axis title with units, its values as shown.

Keys are the engine's (engine/vocabulary.py): ``acc/<split>``, ``loss/<term>``, ``weight/<term>``, ``time/<section>``,
``system/...``; ``weighted/<term>`` (weight x raw loss) is derived here from two logged series, never logged.
"""
from __future__ import annotations

import numpy as np

from app.terms import term_label
from engine.vocabulary import (
    ACC_PREFIX, LOSS_PREFIX, LR_KEY, SECTION_LABELS, SYS_CPU_PERCENT, SYS_GPU_MEM_MB, SYS_GPU_UTIL_PERCENT,
    SYS_MEM_PERCENT, SYS_RSS_MB, SYSTEM_PREFIX, THROUGHPUT_KEY, TIME_PREFIX, TOTAL_LOSS, VAL_LOSS, WEIGHT_PREFIX,
)

# Weight x raw loss of a term: derived from its two logged series (see ``charts.weighted_loss``), never logged.
WEIGHTED_TERM_PREFIX = "weighted/"
SYSTEM_NAMES = {SYS_CPU_PERCENT: "process CPU", SYS_MEM_PERCENT: "machine memory in use",
                SYS_GPU_UTIL_PERCENT: "GPU utilisation", SYS_RSS_MB: "process memory (RSS)",
                SYS_GPU_MEM_MB: "GPU memory in use"}
SPLIT_WORDS = {"train": "train", "val": "validation", "test": "test"}


def metric_title(key: str) -> str:
    """A metric key in words, for chart titles and pickers: 'acc/val' -> 'validation accuracy', 'loss/path:p1' ->
    'p1 loss', 'weight/task' -> 'task (CE) weight'; a key of no known family as it is."""
    family, _, rest = key.partition("/")
    if key in SYSTEM_NAMES:
        return SYSTEM_NAMES[key]
    if key == THROUGHPUT_KEY:
        return "throughput (samples/s)"
    if key == LR_KEY:
        return "learning rate"
    if key in (TOTAL_LOSS, VAL_LOSS):
        return f"{SPLIT_WORDS.get(rest, rest)} loss"
    described = {ACC_PREFIX: lambda: f"{SPLIT_WORDS.get(rest, rest)} accuracy",
                 LOSS_PREFIX: lambda: f"{term_label(rest)} loss",
                 WEIGHT_PREFIX: lambda: f"{term_label(rest)} weight",
                 WEIGHTED_TERM_PREFIX: lambda: f"{term_label(rest)}: weight × loss",
                 TIME_PREFIX: lambda: f"{SECTION_LABELS.get(rest, rest)} time per step"}
    return described[family + "/"]() if family + "/" in described and rest else key


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def axis_title(key: str) -> str:
    """The y-axis title, with units, for a metric key."""
    if key.startswith(ACC_PREFIX):
        return "accuracy (%)"
    if key.startswith(WEIGHT_PREFIX):
        return "term weight"
    if key.startswith(TIME_PREFIX):
        return "ms per step"
    if key == THROUGHPUT_KEY:
        return "samples/s"
    if key == LR_KEY:
        return "learning rate"
    if key in (SYS_RSS_MB, SYS_GPU_MEM_MB):
        return "memory (MiB)"
    if key.startswith(SYSTEM_PREFIX):
        return "%"
    return "loss"


def display_values(key: str, values: np.ndarray) -> np.ndarray:
    """Values as shown: accuracies are stored as fractions and shown as percentages."""
    scale = 100.0 if key.startswith(ACC_PREFIX) else 1.0
    return np.asarray(values, dtype=float) * scale
