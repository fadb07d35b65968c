"""Streamlit inputs generated from a plugin's params model (Configure's weighting, path method and path parameters)."""
from __future__ import annotations

from typing import Any

import streamlit as st
import yaml

from app.plugin_params import AUTO, ParamInput, current_value, fits, fold_params, number_step, param_inputs, unknown_params
from engine.params import Params
from engine.spec_yaml import SpecError, load_yaml_value


def _yaml_text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def yaml_or_problem(text: str, field: str, problems: list[str], fallback: Any) -> tuple[Any, bool]:
    """(the YAML value of a text box, True); or (``fallback``, False) with the problem added to ``problems``,
    named by ``field``: YAML that does not parse, an alias bomb, a duplicate key, nesting too deep."""
    try:
        return load_yaml_value(text), True
    except yaml.YAMLError as err:
        problems.append(f"{field}: not valid YAML ({' '.join(str(err).split())})")
    except SpecError as err:
        problems += [f"{field}: {line}" for line in err.errors]
    return fallback, False


def _yaml_input(label: str, value: Any, key: str, help_text: str, field: str, problems: list[str]) -> Any:
    text = st.text_input(label, _yaml_text(value), key=key, help=help_text)
    return yaml_or_problem(text, field, problems, value)[0]


def _one_input(field: ParamInput, value: Any, key: str, where: str, problems: list[str]) -> Any:
    if field.yaml or not fits(field, value):
        # A value of the wrong type (from a YAML file) stays visible and editable; validation names it.
        return _yaml_input(f"{field.name} (YAML)", value, key + ".yaml", field.help, f"{where}.{field.name}", problems)
    if field.kind == "number":
        cast = int if field.number_type == "int" else float
        return st.number_input(
            field.name, value=cast(value), min_value=None if field.min_value is None else cast(field.min_value),
            max_value=None if field.max_value is None else cast(field.max_value), step=cast(number_step(field)),
            format=None if field.number_type == "int" else "%g", key=key, help=field.help)
    if field.kind == "checkbox":
        return st.checkbox(field.name, value=bool(value), key=key, help=field.help)
    if field.kind == "select":
        options = ([AUTO] if field.optional else []) + list(field.options)
        shown = AUTO if value is None else value
        picked = st.selectbox(field.name, options, index=options.index(shown), key=key, help=field.help,
                              format_func=lambda o: o if o == AUTO else str(o).lower() if isinstance(o, bool) else str(o))
        return None if picked == AUTO else picked
    text = st.text_input(field.name, "" if value is None else str(value), key=key, help=field.help,
                         placeholder="null" if field.optional else "")
    return None if field.optional and not text.strip() else text


def params_inputs(model: type[Params], params: dict[str, Any] | Any, key: str, where: str, problems: list[str],
                  columns: int = 3) -> dict[str, Any]:
    """Draw one input per parameter of ``model`` starting from ``params``; return the new params dict.

    ``key`` prefixes the widget keys (include the plugin's name so another plugin starts afresh); ``where``
    is the spec field ('weighting.params') that YAML problems are reported under.
    """
    if not isinstance(params, dict):  # not a mapping at all: one YAML box for the whole thing
        value = _yaml_input("params (YAML)", params, key + ".all", "a mapping of parameter: value", where, problems)
        return value if value is not None else {}
    fields = param_inputs(model)
    if not fields:
        st.caption("No parameters.")
    values: dict[str, Any] = {}
    if fields:
        cols = st.columns(columns)  # a fixed grid: one parameter does not stretch across the page
        for n, field in enumerate(fields):
            with cols[n % len(cols)]:
                values[field.name] = _one_input(field, current_value(field, params), f"{key}.{field.name}", where,
                                                problems)
    folded = fold_params(fields, params, values)
    unknown = unknown_params(fields, params)
    if unknown:  # left over from a YAML file: shown so they can be removed; validation names each
        edited = _yaml_input("Unknown params (YAML)", unknown, key + ".unknown", "entries no parameter of this "
                             "plugin takes; remove them", where, problems)
        known = {k: v for k, v in folded.items() if k not in unknown}
        folded = {**known, **(edited if isinstance(edited, dict) else {})}
    return folded
