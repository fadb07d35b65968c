"""Comparison groups: one spec run under several weightings x seeds, in one group Compare summarises.

The ablation (engine/ablation.py) varies the paths of a finished run; a comparison varies the
weighting and seed of a spec. Each variant differs from the spec only in weighting, seed and name
("<name> · <weighting> · seed <s>", or "<name> · <method> · <weighting> · seed <s>" when the spec has a
path method, which every variant keeps); weighting params are kept for the spec's own weighting only,
since each weighting has its own params. Every variant is validated on its own: a weighting that
cannot run this spec is reported with its errors, the others are queued.

Used by Configure's "Launch a comparison" (through app/writes.py) and ``python -m engine compare``.
"""
from __future__ import annotations

import copy
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.spec import RunSpec, SpecError, migrate_spec_data, parse_spec, spec_to_yaml
from engine.store import Store

GROUP_PREFIX = "cmp-"
NAME_MAX = next(m.max_length for m in RunSpec.model_fields["name"].metadata if hasattr(m, "max_length"))


def new_group_id() -> str:
    return f"{GROUP_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def variant_name(base: str, combination: str, seed: int) -> str:
    """'<spec name> · <combination> · seed <s>', the spec name shortened to fit the name limit."""
    suffix = f" · {combination} · seed {seed}"
    return base[: max(NAME_MAX - len(suffix), 0)] + suffix


def comparison_variants(spec: dict[str, Any], weightings: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    """One spec dict per (weighting, seed), differing from ``spec`` only in weighting, seed and name.

    Version-1 data is migrated first. The spec's path method, if any, is kept; weighting params are kept
    only for the spec's own weighting: each weighting has its own params.
    """
    spec = migrate_spec_data(spec)
    method = spec.get("method")
    current = spec.get("weighting") or {"name": "equal"}  # data that leaves it out weighs equally
    variants = []
    for weighting in weightings:
        params = current.get("params", {}) if current.get("name") == weighting else {}
        combination = f"{method['name']} · {weighting}" if method else weighting  # as RunSpec.combination
        for seed in seeds:
            variants.append({**copy.deepcopy(spec), "weighting": {"name": weighting, "params": copy.deepcopy(params)},
                             "seed": seed, "name": variant_name(spec.get("name") or "run", combination, seed)})
    return variants


def check_variant(data: dict[str, Any], home: Path | None) -> tuple[RunSpec | None, list[str]]:
    """(the parsed spec or None, every problem of it) for one variant."""
    from engine.validate import validate_spec

    try:
        spec = parse_spec(data)
    except SpecError as err:
        return None, err.errors
    try:
        return spec, validate_spec(spec, home)
    except SpecError as err:  # e.g. a teacher run whose stored spec no longer parses
        return spec, err.errors


@dataclass
class ComparisonPlan:
    """The variants of a comparison: those that can run, and those that cannot with their errors."""

    valid: list[RunSpec] = field(default_factory=list)
    invalid: list[tuple[str, list[str]]] = field(default_factory=list)


def plan_comparison(spec: dict[str, Any], weightings: list[str], seeds: list[int],
                    home: Path | None) -> ComparisonPlan:
    plan = ComparisonPlan()
    for variant in comparison_variants(spec, weightings, seeds):
        parsed, errors = check_variant(variant, home)
        if errors or parsed is None:
            plan.invalid.append((variant["name"], errors))
        else:
            plan.valid.append(parsed)
    return plan


def queue_group(store: Store, specs: list[RunSpec], group_id: str | None) -> list[str]:
    """Queue ``specs`` in the store, in one group when ``group_id`` is given; return their run ids."""
    return [store.create_run(spec_to_yaml(spec), name=spec.name, group_id=group_id) for spec in specs]


def submit_comparison(store: Store, plan: ComparisonPlan, group_id: str | None = None) -> tuple[str, list[str]]:
    """Queue the plan's valid variants in one new group; return (group id, run ids)."""
    group_id = group_id or new_group_id()
    return group_id, queue_group(store, plan.valid, group_id)
