"""The run table's denormalised columns: what a run's spec and its stored accuracies say, worked out once (when
the run is created, when it finishes, and by the version 3 -> 4 migration) so that listing a thousand runs parses
no YAML and scans no metrics.
"""
from __future__ import annotations

import json
import math
import sqlite3
from dataclasses import dataclass
from typing import Any

from engine.spec import SpecError, spec_from_yaml
from engine.vocabulary import MAIN_PHASE, TEST_ACC, VAL_ACC

#: the method column of a run whose spec names no path method (each path's distiller on the whole batch)
PLAIN_METHOD = "plain"
#: columns of `runs` filled from the spec, in this order (teacher_archs and distillers hold JSON arrays)
SPEC_COLUMNS = ("dataset", "teacher_archs", "student_arch", "weighting", "method", "distillers", "n_paths", "seed")
#: columns of `runs` filled when the run finishes
RESULT_COLUMNS = ("final_acc", "best_acc", "best_epoch", "duration_s")


@dataclass(frozen=True)
class SpecSummary:
    """The spec fields the run table filters on; empty for a stored spec that no longer parses."""

    dataset: str = ""
    teacher_archs: tuple[str, ...] = ()
    student_arch: str = ""
    weighting: str = ""
    method: str = ""
    distillers: tuple[str, ...] = ()
    n_paths: int = 0
    seed: int | None = None
    #: (run id, role): the runs whose final model this run loads ("teacher <id>" or "student")
    refs: tuple[tuple[str, str], ...] = ()

    def column_values(self) -> tuple[Any, ...]:
        """The values of SPEC_COLUMNS."""
        return (self.dataset, json.dumps(self.teacher_archs), self.student_arch, self.weighting, self.method,
                json.dumps(self.distillers), self.n_paths, self.seed)


def summarise_spec(spec_yaml: str) -> SpecSummary:
    """The run-table fields of a stored spec (a version-1 spec is read through its migration)."""
    try:
        spec = spec_from_yaml(spec_yaml)
    except (SpecError, ValueError):  # an old or hand-written row: listed with blank fields rather than refused
        return SpecSummary()
    refs = [(t.source.run_id, f"teacher {t.id}") for t in spec.teachers if t.source.kind == "run"]
    if spec.student.source.kind == "run":
        refs.append((spec.student.source.run_id, "student"))
    return SpecSummary(
        dataset=spec.dataset.name,
        teacher_archs=tuple(dict.fromkeys(t.arch for t in spec.teachers)),
        student_arch=spec.student.arch,
        weighting=spec.weighting.name,
        method=spec.method.name if spec.method else PLAIN_METHOD,
        distillers=tuple(sorted({p.distiller for p in spec.active_paths})),
        n_paths=len(spec.active_paths),
        seed=spec.seed,
        refs=tuple(refs),
    )


def _result_number(result: dict[str, Any] | None, key: str) -> float | None:
    value = (result or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def final_accuracy(result: dict[str, Any] | None) -> float | None:
    """The test accuracy a finished run reported, or None."""
    return _result_number(result, "test_acc")


def best_accuracy(con: sqlite3.Connection, run_id: str) -> tuple[float | None, int | None]:
    """(best per-epoch validation accuracy, its epoch counted from 0) of the student's training; test accuracy when
    the run logged no validation; the earliest epoch on a tie. Reads a few rows through the metrics index."""
    for key in (VAL_ACC, TEST_ACC):
        row = con.execute("SELECT value, epoch FROM metrics WHERE run_id=? AND phase=? AND key=? AND value IS NOT NULL"
                          " ORDER BY value DESC, epoch LIMIT 1", (run_id, MAIN_PHASE, key)).fetchone()
        if row is not None:
            return float(row[0]), int(row[1])
    return None, None


def result_values(con: sqlite3.Connection, run_id: str, result: dict[str, Any] | None, finished_at: float | None
                  ) -> tuple[Any, ...]:
    """The values of RESULT_COLUMNS for a run that finished at ``finished_at``: its duration is the seconds its
    result reports, else the time from its first start to its end."""
    duration = _result_number(result, "seconds")
    if duration is None and finished_at is not None:
        started = con.execute("SELECT started_at FROM runs WHERE id=?", (run_id,)).fetchone()
        duration = finished_at - started[0] if started and started[0] is not None else None
    return (final_accuracy(result), *best_accuracy(con, run_id), duration)


def write_refs(con: sqlite3.Connection, run_id: str, summary: SpecSummary) -> None:
    con.executemany("INSERT OR IGNORE INTO run_refs (run_id, ref_run_id, role) VALUES (?,?,?)",
                    [(run_id, ref, role) for ref, role in summary.refs])
