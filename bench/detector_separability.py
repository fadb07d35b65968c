"""How far any verdict rule on the probe's measures could go: each measure's separability of harmful paths.

The detectors' verdicts come from one rule (thresholds, confirmations) over the probe's series. This asks what
the best rule on a measure could score at all, so that a low figure can be put down to the rule or to the measure.
Each path gets one score per measure: the measure summarised over the second half of each seed's full run (when
a path's harm has had time to show), averaged over the seeds, which gives it more evidence than any one run has.
The table reports each score's AUC (the chance that a harmful path scores above a harmless one; 0.5 is chance)
and, for the best threshold chosen knowing the ground truth, the precision and recall where the smaller of the
two is largest. A measure whose best threshold stays below a target cannot reach it with any rule on its own.
"""
from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any, Callable

from bench.detector_scoring import fmt, ground_truth

if TYPE_CHECKING:
    from bench.detector import Scenario

Series = list[float]


def _late(values: Series) -> Series:
    return values[len(values) // 2:]


def _t_statistic(values: Series) -> float:
    """Mean over its standard error (0 for fewer than two values or no spread)."""
    if len(values) < 2 or statistics.stdev(values) == 0:
        return 0.0
    return statistics.fmean(values) / (statistics.stdev(values) / len(values) ** 0.5)


# name -> (the probe's series it reads, its summary of the run's second half); a higher score reads "more harmful"
MEASURES: dict[str, tuple[str, Callable[[Series], float]]] = {
    "effect (mean, nats a step)": ("effect", lambda v: statistics.fmean(_late(v))),
    "effect t (mean / se over probes)": ("effect", lambda v: _t_statistic(_late(v))),
    "share of probes raising val loss": ("effect", lambda v: statistics.fmean(x > 0 for x in _late(v))),
    "-cos(path, val gradient)": ("cos_val", lambda v: -statistics.fmean(_late(v))),
}


def run_score(result: dict[str, Any], path_id: str, measure: str) -> float | None:
    """One run's score of a path on a measure; None when the run logged no probe of it."""
    series, summary = MEASURES[measure]
    values = [value for _, value in result.get("probes", {}).get(f"diag/{series}:{path_id}", [])]
    return summary(values) if values else None


def path_scores(plan: list[Scenario], results: list[dict], measure: str) -> list[tuple[bool, float]]:
    """(harmful, score averaged over the seeds' full runs) per path with a ground truth and a probed run."""
    rows = []
    for sc in plan:
        mine = [r for r in results if r["scenario"] == sc.name and "error" not in r]
        full = [r for r in mine if r["run"] == "full"]
        for path_id, truth in ground_truth(sc, mine).items():
            scores = [s for r in full if (s := run_score(r, path_id, measure)) is not None]
            if truth["harmful"] is not None and scores:
                rows.append((truth["harmful"], statistics.fmean(scores)))
    return rows


def auc(rows: list[tuple[bool, float]]) -> float | None:
    """The chance a harmful path scores above a harmless one (ties count half); None without both kinds."""
    harmful = [s for h, s in rows if h]
    harmless = [s for h, s in rows if not h]
    if not harmful or not harmless:
        return None
    wins = sum((a > b) + 0.5 * (a == b) for a in harmful for b in harmless)
    return wins / (len(harmful) * len(harmless))


def best_threshold(rows: list[tuple[bool, float]]) -> dict[str, float] | None:
    """Flagging every path scoring at least t, the t (known the ground truth) whose min(precision, recall) is
    largest, with its precision and recall; None without a harmful path."""
    harmful = sum(h for h, _ in rows)
    if not harmful:
        return None
    best: dict[str, float] | None = None
    for threshold in sorted({s for _, s in rows}):
        flagged = [h for h, s in rows if s >= threshold]
        precision, recall = sum(flagged) / len(flagged), sum(flagged) / harmful
        if best is None or min(precision, recall) > min(best["precision"], best["recall"]):
            best = {"threshold": threshold, "precision": precision, "recall": recall}
    return best


def separability_table(plan: list[Scenario], results: list[dict]) -> tuple[list[str], dict[str, Any]]:
    """The table's lines and, per measure, its AUC and best threshold (for the JSON line)."""
    lines = ["Separability of harmful paths by each measure (a path's score: the second half of each full run, "
             "averaged over the seeds; the best threshold chosen knowing the ground truth):\n",
             "| measure | paths (harmful) | AUC | best threshold: precision | recall |", "|---|---|---|---|---|"]
    figures = {}
    for measure in MEASURES:
        rows = path_scores(plan, results, measure)
        best = best_threshold(rows)
        figures[measure] = {"paths": len(rows), "harmful": sum(h for h, _ in rows), "auc": auc(rows), "best": best}
        lines.append(f"| {measure} | {len(rows)} ({figures[measure]['harmful']}) | {fmt(figures[measure]['auc'])} | "
                     f"{fmt(best and best['precision'], pct=True)} | {fmt(best and best['recall'], pct=True)} |")
    return lines, figures
