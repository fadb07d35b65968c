"""Ablation: measure what each path does to final accuracy, to check the negative-transfer verdicts.

The probe (engine/diagnostics) judges paths from gradient geometry while a run trains; an
ablation checks those verdicts the slow, direct way. For a run with K active paths it queues
2K+1 runs of the same spec and seed in one group, "abl-<run_id>":

    "<name> · without <pid>"   leave-one-path-out: acc(full) - acc(without) is the path's effect
    "<name> · only <pid>"      the path alone, against ...
    "<name> · no paths"        ... the student alone

Variants switch diagnostics off (only their final accuracy is used) and keep every teacher, so
the inline teachers and teacher-output caches of the original run are reused, not rebuilt.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from engine.diagnostics.verdicts import HELPS, HURTS, NEUTRAL
from engine.spec import RunSpec, SpecError, parse_spec, spec_from_yaml, spec_to_dict, spec_to_yaml
from engine.store import ACTIVE_STATUSES, RunRow, Store

SEP = " · "
NO_PATHS = "no paths"
NAME_MAX = next(m.max_length for m in RunSpec.model_fields["name"].metadata if hasattr(m, "max_length"))
# Accuracy points within which a one-seed ablation's effect counts as neutral. One seed cannot see how much the
# effect varies between seeds (1 to 3.5 points on digits, whose 360 test images make one image 0.28 points): in the
# detector bench (QUICK, 42 paths, 5 seeds) a one-seed ablation judged "hurts" beyond 0.5 points agreed with the
# five seeds' verdict for 36% of its flags and flagged 10 of the clean-only runs' 30 (path, seed) pairs; beyond 2
# points, 100% of its flags, every harmful path, and 3 of the 30 clean pairs.
DEFAULT_TOLERANCE = 2.0
PENDING, MISSING, DONE = "pending", "missing", "done"
# Variants whose run ended like this are queued again by a new submission.
RETRIED = ("failed", "cancelled")


class AblationError(ValueError):
    """An ablation that cannot be submitted or shown; the message names the run or variant at fault."""


def without_label(path_id: str) -> str:
    return f"without {path_id}"


def only_label(path_id: str) -> str:
    return f"only {path_id}"


GROUP_PREFIX = "abl-"


def group_id_of(run_id: str) -> str:
    return f"{GROUP_PREFIX}{run_id}"


def variant_name(name: str, label: str) -> str:
    """'<name> · <label>', the name shortened (with an ellipsis) so the result fits a spec's name limit."""
    room = NAME_MAX - len(SEP) - len(label)
    base = name if len(name) <= room else name[: room - 1] + "…"
    return f"{base}{SEP}{label}"


def _variant(spec: RunSpec, label: str, enabled: set[str]) -> RunSpec:
    data = spec_to_dict(spec)
    data["name"] = variant_name(spec.name, label)
    for path in data["paths"]:
        path["enabled"] = path["id"] in enabled
    data["diagnostics"]["enabled"] = False
    if not enabled:
        # The student alone trains on cross-entropy whatever the weighting and method; some methods refuse
        # to be built without paths (SAKD needs routable spots), so the baseline uses neither.
        data["weighting"] = {"name": "equal", "params": {}}
        data["method"] = None
    return parse_spec(data)


def ablation_specs(spec: RunSpec) -> list[tuple[str, RunSpec]]:
    """(label, spec) of every variant: without each active path, each active path alone, then no paths."""
    active = [p.id for p in spec.active_paths]
    variants = [(without_label(pid), set(active) - {pid}) for pid in active]
    variants += [(only_label(pid), {pid}) for pid in active]
    variants.append((NO_PATHS, set()))
    return [(label, _variant(spec, label, enabled)) for label, enabled in variants]


# ---------------------------------------------------------------- submission
def source_run(store: Store, run_id: str) -> tuple[RunRow, RunSpec]:
    """The run to ablate and its spec, or AblationError saying why it cannot be ablated."""
    run = store.get_run(run_id)
    if run is None:
        raise AblationError(f"no run {run_id!r} in {store.home} (see python -m engine ls)")
    try:
        spec = spec_from_yaml(run.spec_yaml)
    except SpecError as err:
        raise AblationError(f"run {run_id}: its stored spec no longer parses ({'; '.join(err.errors)})") from None
    if not spec.active_paths:
        raise AblationError(f"run {run_id} has no enabled path: there is nothing to ablate")
    return run, spec


def variant_runs(store: Store, run_id: str, spec: RunSpec) -> dict[str, RunRow]:
    """label -> the newest run of that variant in the run's ablation group (absent: never submitted)."""
    labels = {s.name: label for label, s in ablation_specs(spec)}
    found: dict[str, RunRow] = {}
    for run in store.list_runs(group_id=group_id_of(run_id)):  # newest first: the first one seen wins
        label = labels.get(run.name)
        if label is not None and label not in found:
            found[label] = run
    return found


def submit_ablation(store: Store, run_id: str) -> str:
    """Queue the run's ablation variants (those not already queued, running or done); return the group id.

    Every variant is validated before any is queued, so a bad variant leaves the store untouched.
    """
    from engine.validate import validate_spec  # builds models: imported only when an ablation is submitted

    _, spec = source_run(store, run_id)
    existing = variant_runs(store, run_id, spec)
    wanted = [(label, s) for label, s in ablation_specs(spec)
              if label not in existing or existing[label].status in RETRIED]
    group_id = group_id_of(run_id)
    if not wanted:
        raise AblationError(f"run {run_id}: every ablation run of group {group_id} is already queued, running "
                            f"or done (see python -m engine ablation {run_id})")
    problems = [f"{s.name}: {error}" for _, s in wanted for error in validate_spec(s, store.home)]
    if problems:
        raise AblationError(f"run {run_id}: ablation variants are invalid, none was queued:\n" + "\n".join(problems))
    for _, s in wanted:
        store.create_run(spec_to_yaml(s), s.name, group_id=group_id)
    return group_id


def wait_for_group(store: Store, group_id: str, poll_seconds: float = 1.0) -> None:
    """Block until every run of the group has ended (some may be trained by other workers)."""
    while any(run.status in ACTIVE_STATUSES for run in store.list_runs(group_id=group_id)):
        time.sleep(poll_seconds)


# ---------------------------------------------------------------- results
@dataclass(frozen=True)
class AblationRow:
    """One path's verdict next to what the ablation measured. Accuracies are test accuracy in %."""

    path: str
    verdict: str | None  # the probe's verdict on the full run; None when diagnostics did not run
    first_flag_step: int | None
    acc_full: float | None  # None until that run is done
    acc_without: float | None
    effect: float | None  # acc_full - acc_without, points: > 0 means the path helps
    acc_only: float | None
    acc_no_paths: float | None
    alone_gain: float | None  # acc_only - acc_no_paths, points
    measured: str | None  # the effect as a verdict: helps / hurts beyond the tolerance, else neutral
    agrees: bool | None  # verdict == measured; None while either is unknown
    status: str  # done, or what the row waits on: pending, failed, cancelled, missing


def final_accuracy(run: RunRow | None) -> float | None:
    """A done run's test accuracy in percent."""
    if run is None or run.status != DONE:
        return None
    value = run.result.get("test_acc")
    return 100.0 * float(value) if isinstance(value, (int, float)) else None


def run_state(run: RunRow | None) -> str:
    if run is None:
        return MISSING
    return PENDING if run.status in ACTIVE_STATUSES else run.status


def measured_verdict(effect: float, tolerance: float) -> str:
    """Removing a path that hurts raises accuracy: an effect below -tolerance; one that helps, above +tolerance."""
    if effect < -tolerance:
        return HURTS
    if effect > tolerance:
        return HELPS
    return NEUTRAL


def _difference(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _row(pid: str, full: RunRow, runs: dict[str, RunRow], tolerance: float) -> AblationRow:
    verdict = full.result.get("verdicts", {}).get(pid)
    details = full.result.get("verdict_details", {}).get(pid, {})
    needed = (full, runs.get(without_label(pid)), runs.get(only_label(pid)), runs.get(NO_PATHS))
    states = {run_state(run) for run in needed}
    acc_full, acc_without, acc_only, acc_none = (final_accuracy(run) for run in needed)
    effect = _difference(acc_full, acc_without)
    measured = measured_verdict(effect, tolerance) if effect is not None else None
    return AblationRow(
        path=pid, verdict=verdict, first_flag_step=details.get("first_flagged_step"),
        acc_full=acc_full, acc_without=acc_without, effect=effect, acc_only=acc_only, acc_no_paths=acc_none,
        alone_gain=_difference(acc_only, acc_none), measured=measured,
        agrees=verdict == measured if verdict is not None and measured is not None else None,
        status=next((s for s in (PENDING, "failed", "cancelled", MISSING) if s in states), DONE),
    )


def ablation_table(store: Store, run_id: str, tolerance: float = DEFAULT_TOLERANCE) -> list[AblationRow]:
    """One row per active path of the run, in spec order; raises AblationError when none was submitted."""
    if tolerance < 0:
        raise AblationError(f"tolerance: must be 0 or more accuracy points, got {tolerance}")
    full, spec = source_run(store, run_id)
    runs = variant_runs(store, run_id, spec)
    if not runs:
        raise AblationError(f"run {run_id} has no ablation yet: queue one with python -m engine ablate {run_id}")
    return [_row(p.id, full, runs, tolerance) for p in spec.active_paths]


def ablation_progress(store: Store, run_id: str) -> tuple[int, int]:
    """(variant runs done, variant runs in the ablation) of the run's ablation group."""
    _, spec = source_run(store, run_id)
    runs = variant_runs(store, run_id, spec)
    return sum(run.status == DONE for run in runs.values()), len(ablation_specs(spec))
