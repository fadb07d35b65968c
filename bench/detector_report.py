"""The detector bench's report: the tables of bench/detector_scoring.py and bench/detector_separability.py, then
the JSON line."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from bench.detector_scoring import (
    DETECTORS, detector_labels, headline, kind_figures, kind_table, path_table, per_run_table, scenario_table,
    trajectory_mismatches,
)
from bench.detector_separability import separability_table
from bench.planted import rounded

if TYPE_CHECKING:
    from bench.detector import Scenario


def report(plan: list[Scenario], steps: dict[str, int], results: list[dict], teacher_acc: dict,
           seconds: float, quick: bool, notes: list[str]) -> None:
    """Print the tables and the JSON line (steps: a run's steps, per dataset)."""
    labels, label_notes = detector_labels(results)
    notes = notes + label_notes
    if mismatched := trajectory_mismatches(results):
        notes.append(f"effects-only runs off their full run's trajectory: {', '.join(mismatched)}")
    figures = kind_figures(plan, results, steps, labels)
    print(f"## Detector bench ({'QUICK' if quick else 'full'}, {seconds:.0f} s, {len(results)} runs)\n")
    print("\n".join(f"- {n}" for n in notes + [f"{name}: {n} steps a run" for name, n in steps.items()]) + "\n")
    print("\n".join(scenario_table(plan, results, teacher_acc, labels)) + "\n")
    print("Per path (first hurts: the step in each seed's run; · never, -1 flagged at an unknown step):\n")
    print("\n".join(path_table(plan, results, labels)) + "\n")
    print("\n".join(kind_table(figures, labels)) + "\n")
    per_run_lines, per_run = per_run_table(plan, results, labels)
    print("\n".join(per_run_lines) + "\n")
    separability_lines, separability = separability_table(plan, results)
    print("\n".join(separability_lines) + "\n")
    overall = figures["overall"]
    print(json.dumps(rounded({
        "bench": "detector", "quick": quick, "seconds": round(seconds), "runs": len(results),
        "failed_runs": sum("error" in r for r in results), **headline(overall["new"]),
        **{name: headline(overall[det]) if det in labels else None
           for name, det in (("effects_only", "effects"), ("today", "today"), ("ceiling", "ceiling"))},
        "today_fields": "cosine_*" if labels.get("today") == DETECTORS["today"].label else "main fields",
        "lookahead_minus_oracle": overall["lookahead_minus_oracle"], "per_kind": figures, "per_run": per_run,
        "separability": separability})))
