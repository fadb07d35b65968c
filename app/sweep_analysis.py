"""Sweep analysis over a group or any selection of runs: which spec fields vary, how much each matters for
accuracy, the spread over seeds, and what each run's weighting made of each path.

Pure functions (no Streamlit); ``app.sweep_charts`` draws their results. A page uses them like this:

1. ``sweep = varied_fields({run_id: spec_dict})``: spec dicts are the runs' stored YAML loaded as plain data
   (``yaml.safe_load(run.spec_yaml)``; version-1 specs are migrated here). ``sweep.values`` holds the varied
   fields per run, ``sweep.seeds`` each run's seed, ``sweep.configs`` each run's configuration label.
2. ``runs = sweep_frame(sweep, final, best)`` with the final and best accuracy per run (fractions in [0, 1], as
   ``engine.catalog.RunEntry.final_acc`` / ``best_acc`` give them; None for a run without one).
3. ``parameter_importance(runs, sweep.fields, FINAL)`` (or ``BEST``); its ValueError message is meant for
   ``st.error``. ``seed_summary(runs)`` for mean +- std per configuration.
4. With the selected runs' metrics in long format (run_id, phase, step, epoch, key, value), only the rows needed
   (the per-epoch ``acc/*`` and each path's last ``weight/path:*``, as ``app.sweep_view.sweep_metrics`` reads
   them): ``epoch_bands(metrics, sweep.configs, key)`` and ``path_final_weights(metrics, sweep.configs,
   sweep.path_ids)``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from engine.spec import SpecError, migrate_spec_data, parse_spec
from engine.vocabulary import MAIN_PHASE, PATH_WEIGHT_PREFIX

FINAL, BEST = "final_acc", "best_acc"  # target columns of ``sweep_frame``: fractions in [0, 1]
TARGET_LABELS = {FINAL: "final accuracy", BEST: "best accuracy"}
MIN_RUNS = 4  # fewer runs than this say nothing about which field matters
UNSET = "unset"  # a field a run's spec does not have (a path only some runs use, a weighting's own param)
ALL_RUNS = "all runs"  # the configuration label when no field varies
# Fields that are not parameters of the experiment: they name or place a run, or set how often it logs.
# The seed is kept apart (``VariedFields.seeds``): runs that differ only in it are one configuration.
NOT_PARAMETERS = ("version", "name", "seed", "device", "log_every", "telemetry_every", "resources")
# Lists whose items carry an id: flattened as "paths[<id>].distiller", so the name says which path it is.
ID_LISTS = ("paths", "teachers")
RF_TREES = 100
RF_SEED = 0


@dataclass(frozen=True)
class VariedFields:
    """The spec fields that differ across runs. ``values``: index run id, one column per field (in ``fields``
    order); a run lacking a field holds ``UNSET``. ``numeric``: the fields whose every value is a number."""

    fields: list[str]
    values: pd.DataFrame
    numeric: frozenset[str]
    seeds: pd.Series
    configs: pd.Series  # run id -> configuration label ("field=value · field=value"); seeds share a label
    path_ids: list[str]  # every run's path ids, in spec order (first run first): the order of path colours


def full_spec(data: Mapping[str, Any]) -> dict[str, Any]:
    """The spec with every default filled in (so a field left out and one set to its default compare equal);
    a spec that no longer validates is taken as written, after the version-1 migration."""
    try:
        return parse_spec(dict(data)).model_dump(mode="json")
    except SpecError:
        return migrate_spec_data(dict(data))


def flatten_spec(data: Mapping[str, Any]) -> dict[str, Any]:
    """{readable dotted field: scalar} of a spec: "optimizer.lr", "weighting.params.alpha",
    "paths[p-kd].params.temperature" (items of paths and teachers by id), other lists as their JSON text.
    Fields set to None and empty sections are left out, so another run's value for them meets ``UNSET``."""
    return _parameters(full_spec(data))


def _parameters(full: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    _flatten(full, "", flat)
    return {field: value for field, value in flat.items() if field.split(".")[0].split("[")[0] not in NOT_PARAMETERS}


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif prefix in ID_LISTS and isinstance(node, list):
        for item in node:
            if isinstance(item, dict):
                rest = {k: v for k, v in item.items() if k != "id"}
                _flatten(rest, f"{prefix}[{item.get('id')}]", out)
    elif isinstance(node, list):
        out[prefix] = json.dumps(node, sort_keys=True)  # milestones, normalisation means: one value, hashable
    elif node is not None:  # None means "not set" (no method, the distiller's own weight): it reads as UNSET
        out[prefix] = node


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def varied_fields(specs: Mapping[str, Mapping[str, Any]]) -> VariedFields:
    """The fields whose values differ across the runs ``specs`` (run id -> spec dict), each run's seed apart."""
    full = {run_id: full_spec(spec) for run_id, spec in specs.items()}
    flat = {run_id: _parameters(spec) for run_id, spec in full.items()}
    names = list(dict.fromkeys(field for fields in flat.values() for field in fields))
    table = pd.DataFrame([[row.get(f, UNSET) for f in names] for row in flat.values()],
                         index=pd.Index(list(flat), name="run_id"), columns=names, dtype=object)
    fields = [f for f in names if _distinct(table[f]) > 1]
    numeric = frozenset(f for f in fields if all(_is_number(v) for v in table[f]))
    values = table[fields]
    seeds = pd.Series({run_id: spec.get("seed") for run_id, spec in full.items()}, name="seed", dtype=object)
    path_ids = list(dict.fromkeys(str(p.get("id")) for spec in full.values() for p in _items(spec, "paths")))
    return VariedFields(fields, values, numeric, seeds, config_labels(values), path_ids)


def _items(spec: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    value = spec.get(name)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def value_key(value: Any) -> Any:
    """A hashable key per distinct value: 1 and 1.0 are one value (a param written either way), True and
    1 are not (Python would merge them), nor 1 and "1"."""
    if _is_number(value):
        return ("number", float(value))
    return (type(value).__name__, value)


def _distinct(values: Iterable[Any]) -> int:
    return len({value_key(v) for v in values})


def config_labels(values: pd.DataFrame) -> pd.Series:
    """Each run's configuration: its varied fields as "field=value · ...", or ``ALL_RUNS`` when none varies."""
    if values.columns.empty:
        return pd.Series(ALL_RUNS, index=values.index, name="config")
    labels = [" · ".join(f"{field}={value}" for field, value in row.items()) for _, row in values.iterrows()]
    return pd.Series(labels, index=values.index, name="config")


def short_configs(configs: pd.Series, max_fields: int = 3) -> pd.Series:
    """Chart labels of the configurations: their own when none has more than ``max_fields`` fields, else
    "config 1", "config 2", ... in first-seen order (two runs of different setups vary in dozens of fields, which
    no axis can show; the seed table maps each number to its full configuration)."""
    if all(label.count(" · ") < max_fields for label in configs):
        return configs
    numbers = {label: f"config {i}" for i, label in enumerate(dict.fromkeys(configs), 1)}
    return configs.map(numbers)


def sweep_frame(sweep: VariedFields, final: Mapping[str, float | None],
                best: Mapping[str, float | None]) -> pd.DataFrame:
    """One row per run: the varied fields, seed, config, ``FINAL`` and ``BEST`` (NaN where a run has none)."""
    frame = sweep.values.copy()
    frame["seed"], frame["config"] = sweep.seeds, sweep.configs
    frame[FINAL] = pd.Series({r: final.get(r) for r in frame.index}, dtype=float)
    frame[BEST] = pd.Series({r: best.get(r) for r in frame.index}, dtype=float)
    return frame


def parameter_importance(frame: pd.DataFrame, fields: list[str], target: str) -> pd.DataFrame:
    """How strongly each field goes with ``target``: Spearman's rank correlation and random-forest importance.

    Runs without a target value are left out; fields with one value among the rest are dropped. A categorical
    field (any non-number value, such as a weighting name) is encoded by the target's mean per category before
    the rank correlation, so its correlation is never negative: read its magnitude only. That encoding fits each
    category to its own runs, so a categorical field with more values than half the runs (a per-run checkpoint
    path: one run per value) would look perfect whatever it does; such fields are left out. The forest
    (``RandomForestRegressor``, fixed random_state) sees categories as ordinals in the order of those means,
    the ordering a tree can split best. Columns: field, spearman, abs_spearman, rf_importance, n_values;
    sorted by rf_importance, then |spearman|. Raises ValueError, with a message for the page, when fewer than
    ``MIN_RUNS`` runs have a target value, all have the same one, or no field varies among them.
    """
    label = TARGET_LABELS.get(target, target)
    runs = frame[frame[target].notna()]
    if len(runs) < MIN_RUNS:
        raise ValueError(f"parameter importance needs at least {MIN_RUNS} runs with a {label}; "
                         f"the selection has {len(runs)}")
    y = runs[target].astype(float)
    if y.nunique() < 2:
        raise ValueError(f"parameter importance needs {label}s that differ, and every one of the {len(runs)} "
                         f"runs has {100 * y.iloc[0]:.2f}%: no setting goes with a change of it")
    encoded = {f: _encode(runs[f], y) for f in fields if _rankable(runs[f])}
    if not encoded:
        raise ValueError(f"no spec field varies across the {len(runs)} runs with a {label}: "
                         "nothing to rank (runs that differ only in seed are one configuration)")
    # Imported here: scikit-learn's ensemble takes about 1.5 s to import, which Compare's first render must not pay.
    from sklearn.ensemble import RandomForestRegressor

    x = pd.DataFrame(encoded)
    forest = RandomForestRegressor(n_estimators=RF_TREES, random_state=RF_SEED, n_jobs=1).fit(x.to_numpy(), y)
    spearman = [_spearman(x[f], y) for f in x.columns]
    table = pd.DataFrame({"field": list(x.columns), "spearman": spearman, "abs_spearman": np.abs(spearman),
                          "rf_importance": forest.feature_importances_,
                          "n_values": [_distinct(runs[f]) for f in x.columns]})
    return table.sort_values(["rf_importance", "abs_spearman"], ascending=False, ignore_index=True)


def _encode(values: pd.Series, target: pd.Series) -> pd.Series:
    """Numbers as they are; categories as the target's mean per category."""
    if all(_is_number(v) for v in values):
        return values.astype(float)
    codes: dict[Any, int] = {}
    category = np.array([codes.setdefault(value_key(v), len(codes)) for v in values])
    means = target.groupby(category).mean()
    return pd.Series(means.loc[category].to_numpy(), index=values.index)


def _rankable(values: pd.Series) -> bool:
    """Varies, and is numeric or has at least two runs per category on average (see parameter_importance)."""
    distinct = _distinct(values)
    return distinct > 1 and (all(_is_number(v) for v in values) or 2 * distinct <= len(values))


def _spearman(x: pd.Series, y: pd.Series) -> float:
    """Pearson's correlation of the ranks (ties share their mean rank); 0 when either side is constant."""
    rx, ry = x.rank().to_numpy(), y.rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def seed_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (runs identical but for the seed): n runs with a final accuracy, and the mean and
    sample std (n - 1; NaN for one run) of final and best accuracy in percent, best mean first."""
    runs = frame[frame[FINAL].notna() | frame[BEST].notna()]
    stats = runs.groupby("config")[[FINAL, BEST]].agg(["mean", "std"]) * 100.0
    stats.columns = [f"{target.removesuffix('_acc')}_{stat}_pct" for target, stat in stats.columns]
    stats.insert(0, "n", runs.groupby("config")[FINAL].count())
    stats["seeds"] = runs.groupby("config")["seed"].agg(lambda s: ", ".join(str(v) for v in sorted(s.dropna())))
    return stats.sort_values("final_mean_pct", ascending=False).reset_index()


def epoch_bands(metrics: pd.DataFrame, configs: pd.Series, key: str) -> pd.DataFrame:
    """Per configuration and epoch: mean, sample std and n over its runs of ``key`` (stored units).

    A run's value for an epoch is its mean over the epoch's logged values (one value for per-epoch keys such
    as acc/test); only the student's training phase counts. Columns: config, epoch, mean, std, n.
    """
    own = metrics[(metrics["phase"] == MAIN_PHASE) & (metrics["key"] == key) & metrics["run_id"].isin(configs.index)]
    per_run = own.groupby(["run_id", "epoch"], as_index=False)["value"].mean()
    per_run["config"] = per_run["run_id"].map(configs)
    bands = per_run.groupby(["config", "epoch"])["value"].agg(["mean", "std", "count"]).reset_index()
    return bands.rename(columns={"count": "n"})


def run_final_weights(metrics: pd.DataFrame) -> pd.DataFrame:
    """runs x paths: the last weight (highest step) each run's weighting gave each path (weight/path:<id>)."""
    weights = metrics[(metrics["phase"] == MAIN_PHASE) & metrics["key"].str.startswith(PATH_WEIGHT_PREFIX)]
    weights = weights[weights["value"].notna()]
    last = weights.sort_values("step", kind="stable").groupby(["run_id", "key"])["value"].last().unstack("key")
    ordered = list(dict.fromkeys(weights["key"]))  # first logged order; callers reorder by spec if they wish
    last = last.reindex(columns=ordered)
    last.columns = [c[len(PATH_WEIGHT_PREFIX):] for c in last.columns]
    return last


def path_final_weights(metrics: pd.DataFrame, configs: pd.Series, path_ids: list[str] | None = None) -> pd.DataFrame:
    """configurations x paths: the final weight of each path, averaged over the configuration's runs (seeds).
    Columns follow ``path_ids`` (spec order) when given, else first logged order; NaN where no run has the path."""
    per_run = run_final_weights(metrics[metrics["run_id"].isin(configs.index)])
    if path_ids is not None:
        per_run = per_run.reindex(columns=[*path_ids, *[p for p in per_run.columns if p not in path_ids]])
    table = per_run.groupby(per_run.index.map(configs)).mean().dropna(axis=1, how="all")  # paths never weighed
    table.index.name = "config"
    return table
