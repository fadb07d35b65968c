"""Pure helpers behind the Configure page: RunSpec dict <-> editable tables, error routing.

The form's state is one RunSpec-shaped dict. Tables show a slice of it as a DataFrame and
edited tables are folded back, keeping what the table does not show (arch params, a
teacher's optimizer, a path's distiller params) from the row the edit started from.
"""
from __future__ import annotations

import re
from numbers import Integral
from typing import Any

import pandas as pd

from engine.comparison import comparison_variants, variant_name  # noqa: F401  (Configure and tests use them)
from engine.models.spots import SpotInfo
from engine.paths.candidates import propose_candidates
from engine.spec import RunSpec

NAME_MAX = next(m.max_length for m in RunSpec.model_fields["name"].metadata if hasattr(m, "max_length"))
TEACHER_COLUMNS = ["id", "arch", "source", "epochs", "run_id", "checkpoint"]
PATH_COLUMNS = ["id", "teacher", "teacher_spot", "student_spot", "distiller", "weight", "enabled"]
SOURCE_KINDS = ["train", "run", "checkpoint", "pretrained"]
STUDENT_SOURCE_KINDS = ["scratch", "pretrained", "checkpoint", "run"]
# Form sections, and the top-level spec fields whose errors are shown under each.
SECTIONS: dict[str, tuple[str, ...]] = {
    "run": ("name", "epochs", "seed", "optimizer", "schedule", "device", "log_every", "version"),
    "dataset": ("dataset",),
    "teachers": ("teachers",),
    "student": ("student",),
    "paths": ("paths",),
    "weighting": ("weighting",),
    "method": ("method",),
    "diagnostics": ("diagnostics",),
}


def clean(value: Any) -> Any:
    """A table cell as plain Python: empty cells (None, NaN, NA) become None, numpy scalars unwrap."""
    if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _previous_row(previous: list[dict[str, Any]], label: Any) -> dict[str, Any]:
    """The spec entry an edited row started from (rows added in the editor have new labels)."""
    if isinstance(label, Integral) and 0 <= int(label) < len(previous):
        return previous[int(label)]
    return {}


def teachers_frame(teachers: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for t in teachers:
        source = t.get("source") or {}
        rows.append({
            "id": t.get("id"), "arch": t.get("arch"), "source": source.get("kind", "train"),
            "epochs": source.get("epochs"), "run_id": source.get("run_id"), "checkpoint": source.get("path"),
        })
    frame = pd.DataFrame(rows, columns=TEACHER_COLUMNS)
    frame["epochs"] = frame["epochs"].astype("Int64")
    return frame


def _teacher_source(row: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    kind = row["source"] or "train"
    if kind == "run":
        return {"kind": "run", "run_id": row["run_id"]}
    if kind == "checkpoint":
        return {"kind": "checkpoint", "path": row["checkpoint"]}
    if kind == "pretrained":  # the checkpoint column may name a local copy of the published weights
        return {"kind": "pretrained", "path": row["checkpoint"]}
    if kind != "train":
        return {"kind": kind}  # left for parse_spec to name as an invalid source
    # Keep the optimizer, schedule and seed a YAML spec gave this teacher's training.
    kept = previous if previous.get("kind") == "train" else {}
    return {**kept, "kind": "train", "epochs": None if row["epochs"] is None else int(row["epochs"])}


def student_source(kind: str, path: str | None, run_id: str | None) -> dict[str, Any]:
    """The student's source dict from the form's choices (what a kind does not use is left out)."""
    if kind == "checkpoint":
        return {"kind": "checkpoint", "path": path}
    if kind == "pretrained":
        return {"kind": "pretrained", "path": path}
    if kind == "run":
        return {"kind": "run", "run_id": run_id}
    return {"kind": kind}


def teachers_from_frame(frame: pd.DataFrame, previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold an edited teachers table back into spec dicts; index labels point at the previous rows."""
    teachers = []
    for label, raw in frame.iterrows():
        row = {k: clean(v) for k, v in raw.items()}
        before = _previous_row(previous, label)
        same_arch = before.get("arch") == row["arch"]
        teachers.append({
            **before, "id": row["id"], "arch": row["arch"],
            "arch_params": before.get("arch_params", {}) if same_arch else {},
            "source": _teacher_source(row, before.get("source") or {}),
        })
    return teachers


def renamed_teachers(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, str]:
    """old id -> new id for teachers whose row kept its position but changed id."""
    return {
        b["id"]: a["id"] for b, a in zip(before, after)
        if b.get("id") and a.get("id") and b["id"] != a["id"]
    }


def retarget_paths(paths: list[dict[str, Any]], renames: dict[str, str]) -> list[dict[str, Any]]:
    """Paths follow a renamed teacher instead of silently pointing at a missing id."""
    return [{**p, "teacher": renames.get(p.get("teacher"), p.get("teacher"))} for p in paths]


def paths_frame(paths: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame([{c: p.get(c) for c in PATH_COLUMNS} for p in paths], columns=PATH_COLUMNS)
    frame["weight"] = frame["weight"].astype("Float64")
    frame["enabled"] = frame["enabled"].astype("boolean")
    return frame


def paths_from_frame(frame: pd.DataFrame, previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold an edited paths table back; distiller params survive unless the distiller changed."""
    paths = []
    for label, raw in frame.iterrows():
        row = {k: clean(v) for k, v in raw.items()}
        before = _previous_row(previous, label)
        params = before.get("params", {}) if before.get("distiller") == row["distiller"] else {}
        enabled = True if row["enabled"] is None else bool(row["enabled"])
        weight = None if row["weight"] is None else float(row["weight"])
        paths.append({**row, "weight": weight, "enabled": enabled, "params": params})
    return paths


def section_of(error: str) -> str | None:
    """The form section an error line ('paths[0].teacher_spot: ...') belongs to."""
    match = re.match(r"[A-Za-z_]+", error)
    field = match.group(0) if match else ""
    return next((name for name, fields in SECTIONS.items() if field in fields), None)


def errors_by_section(errors: list[str]) -> dict[str | None, list[str]]:
    grouped: dict[str | None, list[str]] = {}
    for error in errors:
        grouped.setdefault(section_of(error), []).append(error)
    return grouped


def candidate_paths(teacher_ids: list[str], spots: dict[str, list[SpotInfo]]) -> list[dict[str, Any]]:
    """The natural paths from every teacher to the student, each with its suggested distiller.

    Only logits paths start enabled: a user switches on the feature paths they want, which
    keeps the first run of a fresh matrix as cheap and readable as plain KD.
    """
    paths = []
    for tid in teacher_ids:
        for cand in propose_candidates(spots.get(tid, []), spots.get("student", [])):
            distiller = cand.distillers[0]
            paths.append({"id": cand.path_id(tid, distiller), "teacher": tid, "distiller": distiller,
                          "teacher_spot": cand.teacher_spot.name, "student_spot": cand.student_spot.name,
                          "weight": None, "params": {}, "enabled": cand.student_spot.kind == "logits"})
    return paths


def merge_paths(current: list[dict[str, Any]], proposed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append the proposed paths that are new by id and by what they connect; user rows stay as they are."""

    def signature(p: dict[str, Any]) -> tuple:
        return p.get("teacher"), p.get("teacher_spot"), p.get("student_spot"), p.get("distiller")

    ids = {p.get("id") for p in current}
    signatures = {signature(p) for p in current}
    return [*current, *(p for p in proposed if p["id"] not in ids and signature(p) not in signatures)]


def parse_seeds(text: str) -> list[int]:
    """Seeds from "0,1,2" (commas or spaces), duplicates dropped; ValueError naming a bad entry."""
    seeds: list[int] = []
    for item in re.split(r"[,\s]+", text.strip()):
        if not item:
            continue
        try:
            seed = int(item)
        except ValueError:
            raise ValueError(f"{item!r} is not a whole number; write seeds like 0,1,2") from None
        if seed not in seeds:
            seeds.append(seed)
    if not seeds:
        raise ValueError("no seed given; write seeds like 0,1,2")
    return seeds


def teacher_check_frame(result: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The teacher check's result, a row per teacher: test accuracy in percent (or why there is none), images."""
    rows = []
    for tid, found in result.items():
        acc = found.get("test_acc")
        note = found.get("error") or found.get("note") or ("reused from the cache" if found.get("cached") else "")
        rows.append({"teacher": tid, "accuracy": None if acc is None else 100 * acc,
                     "images": found.get("test_samples"), "note": note})
    return pd.DataFrame(rows, columns=["teacher", "accuracy", "images", "note"])
