"""A run's named terms as the charts show them: their order and a label a user can read.

The engine logs every term it trains as ``loss/<name>`` and ``weight/<name>`` (engine/terms.py):
``task``, ``path:<id>``, a path method's ``<method>/<term>`` (``amtml/fused_kd``, ``amtml/hint:<path>``)
and a weighting's ``<weighting>/<term>`` (``uncertainty/reg``). The pages know no method by name:
labels are built from the name's parts, so a new plugin's terms read well without an edit here.
"""
from __future__ import annotations

from engine.vocabulary import PATH_PREFIX, TASK

TASK_LABEL = "task (CE)"
# Abbreviations in term names, spelt out (or capitalised) for legends.
WORDS = {"kd": "KD", "ce": "CE", "reg": "regulariser", "kl": "KL", "mse": "MSE"}


def path_of(name: str) -> str | None:
    """'path:<id>' -> '<id>'; None for a term that is not a path's own."""
    return name[len(PATH_PREFIX):] if name.startswith(PATH_PREFIX) else None


def ordered_terms(names: set[str] | list[str], path_ids: list[str]) -> list[str]:
    """The task first, then path terms in spec order (unknown paths after), then every other term by name."""
    names = set(names)
    paths = {path_of(n) for n in names} - {None}
    ordered_paths = [p for p in path_ids if p in paths] + sorted(paths - set(path_ids))
    others = sorted(n for n in names if n != TASK and path_of(n) is None)
    return [TASK] * (TASK in names) + [PATH_PREFIX + p for p in ordered_paths] + others


def term_label(name: str) -> str:
    """'task' -> 'task (CE)', 'path:<id>' -> '<id>', 'amtml/fused_kd' -> 'amtml · fused KD',
    'amtml/hint:p1' -> 'amtml · hint (p1)', 'uncertainty/reg' -> 'uncertainty · regulariser'."""
    if name == TASK:
        return TASK_LABEL
    path = path_of(name)
    if path is not None:
        return path
    owner, sep, term = name.partition("/")
    if not sep:
        return name
    what, _, subject = term.partition(":")
    words = " ".join(WORDS.get(w, w) for w in what.split("_") if w)
    return f"{owner} · {words}" + (f" ({subject})" if subject else "")
