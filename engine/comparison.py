"""Comparison groups: one spec run under several aggregators x seeds, in one group Compare summarises.

The ablation (engine/ablation.py) varies the paths of a finished run; a comparison varies the
aggregator and seed of a spec. Each variant differs from the spec only in aggregator, seed and name
("<name> · <aggregator> · seed <s>"); aggregator params are kept for the spec's own aggregator only,
since each aggregator has its own params. Every variant is validated on its own: an aggregator that
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

from engine.spec import RunSpec, SpecError, parse_spec, spec_to_yaml
from engine.store import Store

GROUP_PREFIX = "cmp-"
NAME_MAX = next(m.max_length for m in RunSpec.model_fields["name"].metadata if hasattr(m, "max_length"))


def new_group_id() -> str:
    return f"{GROUP_PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def variant_name(base: str, aggregator: str, seed: int) -> str:
    """'<spec name> · <aggregator> · seed <s>', the spec name shortened to fit the name limit."""
    suffix = f" · {aggregator} · seed {seed}"
    return base[: max(NAME_MAX - len(suffix), 0)] + suffix


def comparison_variants(spec: dict[str, Any], aggregators: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    """One spec dict per (aggregator, seed), differing from ``spec`` only in aggregator, seed and name.

    Aggregator params are kept only for the spec's own aggregator: each aggregator has its own params.
    """
    variants = []
    for aggregator in aggregators:
        own = spec["aggregator"]["name"] == aggregator
        params = copy.deepcopy(spec["aggregator"].get("params", {})) if own else {}
        for seed in seeds:
            variants.append({**copy.deepcopy(spec), "aggregator": {"name": aggregator, "params": params},
                             "seed": seed, "name": variant_name(spec.get("name") or "run", aggregator, seed)})
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


def plan_comparison(spec: dict[str, Any], aggregators: list[str], seeds: list[int],
                    home: Path | None) -> ComparisonPlan:
    plan = ComparisonPlan()
    for variant in comparison_variants(spec, aggregators, seeds):
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
