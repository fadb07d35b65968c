"""Comparison groups: one spec run under several weightings x seeds, in one group Compare summarises.

The ablation (engine/ablation.py) varies the paths of a finished run; a comparison varies the
weighting and seed of a spec. Each variant differs from the spec only in weighting, seed and name
("<name> · <weighting> · seed <s>", or "<name> · <method> · <weighting> · seed <s>" when the spec has a
path method, which every variant keeps); weighting params are kept for the spec's own weighting only,
since each weighting has its own params. Every variant is validated on its own: a weighting that
cannot run this spec is reported with its errors, the others are queued.

Used by Configure's "Launch a comparison" (through app/writes.py) and ``python -m engine compare``. A sweep
(``python -m engine sweep --grid FIELD=V1,V2``) varies any spec fields the same way (``sweep_variants``).
"""
from __future__ import annotations

import copy
import itertools
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.spec import RunSpec, SpecError, apply_overrides, migrate_spec_data, parse_spec, spec_to_yaml
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


#: --grid names that stand for a spec field
GRID_ALIASES = {"aggregator": "weighting.name"}


def parse_grid(items: list[str], base: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """[(dotted field, value texts)] from --grid FIELD=V1,V2 options, every problem named by its field."""
    grid, errors = [], []
    for item in items:
        name, sep, text = item.partition("=")
        field = GRID_ALIASES.get(name.strip(), name.strip())
        values = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
        if not sep or not field:
            errors.append(f"--grid {item}: expected FIELD=V1,V2, such as weighting.name=equal,uncertainty")
        elif field in ("seed", "name"):
            errors.append(f"--grid {field}: set by the sweep itself (use --seeds for seeds)")
        elif field in (f for f, _ in grid):
            errors.append(f"--grid {field}: given twice; list all its values in one --grid")
        elif not values:
            errors.append(f"--grid {field}: no value given (expected {field}=V1,V2)")
        elif problem := _field_problem(base, field.split(".")):
            errors.append(f"--grid {field}: {problem}")
        else:
            grid.append((field, values))
    if errors:
        raise SpecError(errors)
    return grid


def _field_problem(base: dict[str, Any], keys: list[str]) -> str | None:
    """Why the spec (every field filled in) has no field at ``keys``, or None. Plugin params are open."""
    node: Any = base
    for depth, key in enumerate(keys):
        where = ".".join(keys[:depth]) or "the spec"
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                return f"{where} has no item {key} (it holds {len(node)}; items are numbered from 0)"
            node = node[int(key)]
        elif not isinstance(node, dict):
            return f"{where} is a value, not a section"
        elif key in node:
            node = node[key]
        elif depth and keys[depth - 1] in ("params", "arch_params"):
            return None  # checked with the rest of each variant
        else:
            return f"no such field: {where} has {', '.join(sorted(node))}"
    return None


def sweep_variants(base: dict[str, Any], grid: list[tuple[str, list[str]]], seeds: list[int]) -> list[dict[str, Any]]:
    """One spec dict per combination of grid values and seed, named after what it changes."""
    variants = []
    for combo in itertools.product(*[[(field, v) for v in values] for field, values in grid]):
        data = copy.deepcopy(base)
        for field, text in combo:  # a plugin whose name changes starts from its own defaults, not the old params
            parent = _section(data, field)
            if field.endswith(".name") and isinstance(parent, dict) and str(parent.get("name")) != text:
                parent["params"] = {}
        data = apply_overrides(data, [f"{field}={text}" for field, text in combo])
        label = " · ".join(f"{field}={text}" for field, text in combo) or "base"
        for seed in seeds:
            variants.append({**copy.deepcopy(data), "seed": seed,
                             "name": variant_name(base.get("name") or "run", label, seed)})
    return variants


def _section(data: dict[str, Any], field: str) -> Any:
    """The section that holds the dotted ``field``."""
    node: Any = data
    for key in field.split(".")[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.get(key)
    return node


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
