"""Pure helpers behind Configure's generated parameter inputs: a plugin's params model -> one description
per input (kind, bounds, options, help), and the edited values folded back into a spec's ``params`` dict.

No Streamlit here, so the mapping is unit-tested on its own; app/param_inputs.py draws the inputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.params import Params, default_of, field_bounds, field_kind, format_default

#: a selectbox's stand-in for null in an optional Literal or bool field
AUTO = "auto (null)"


@dataclass(frozen=True)
class ParamInput:
    """How to draw one parameter: ``kind`` is number (int or float in ``number_type``), checkbox, select or
    text (free text, empty = null when ``optional``); ``yaml`` marks a field no input fits (a text box of YAML)."""

    name: str
    kind: str
    default: Any
    help: str
    number_type: str | None = None  # "int" | "float"
    min_value: float | None = None
    max_value: float | None = None
    options: tuple[Any, ...] = ()
    optional: bool = False
    yaml: bool = False


def _number_limits(kind: str, bounds: dict[str, float]) -> tuple[float | None, float | None]:
    """Inclusive limits for a number input; an exclusive float bound is left to validation to name."""
    low = bounds.get("ge")
    high = bounds.get("le")
    if kind == "int":
        if "gt" in bounds:
            low = math.floor(bounds["gt"]) + 1
        if "lt" in bounds:
            high = math.ceil(bounds["lt"]) - 1
        return (None if low is None else int(low)), (None if high is None else int(high))
    if low is None and "gt" in bounds:
        low = bounds["gt"]  # the input allows the bound itself; validation says "greater than"
    if high is None and "lt" in bounds:
        high = bounds["lt"]
    return (None if low is None else float(low)), (None if high is None else float(high))


def param_inputs(model: type[Params]) -> list[ParamInput]:
    """One input description per field of ``model``, in declaration order."""
    found = []
    for name, info in model.model_fields.items():
        kind, optional, choices = field_kind(info)
        default = default_of(info)
        bounds = field_bounds(info)
        limits = ", ".join(f"{sym} {bounds[b]:g}" for b, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
                           if b in bounds)
        help_text = f"{info.description or name} (default {format_default(default)}{'; ' + limits if limits else ''})"
        if kind in ("int", "float") and not optional:
            low, high = _number_limits(kind, bounds)
            found.append(ParamInput(name, "number", default, help_text, number_type=kind, min_value=low,
                                    max_value=high))
        elif kind == "bool" and not optional:
            found.append(ParamInput(name, "checkbox", default, help_text))
        elif kind == "choice" or kind == "bool":
            options = tuple(choices) if kind == "choice" else (True, False)
            found.append(ParamInput(name, "select", default, help_text, options=options, optional=optional))
        elif kind == "str":
            found.append(ParamInput(name, "text", default, help_text, optional=optional))
        else:
            found.append(ParamInput(name, "text", default, help_text, optional=optional, yaml=True))
    return found


def fits(field: ParamInput, value: Any) -> bool:
    """Whether the field's input can show ``value`` (a YAML value of the wrong type is shown as YAML text)."""
    if field.yaml:
        return True
    if value is None:
        return field.optional
    if field.kind == "number":
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not is_number or (field.number_type == "int" and not isinstance(value, int)):
            return False
        return ((field.min_value is None or value >= field.min_value)
                and (field.max_value is None or value <= field.max_value))
    if field.kind == "checkbox":
        return isinstance(value, bool)
    if field.kind == "select":
        return value in field.options and type(value) is type(next(o for o in field.options if o == value))
    return isinstance(value, str)


def current_value(field: ParamInput, params: dict[str, Any]) -> Any:
    """What the input starts from: the spec's value, else the default."""
    return params.get(field.name, field.default)


def fold_params(fields: list[ParamInput], params: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The spec's ``params`` after the inputs: a value equal to the default that the spec did not name stays
    unnamed (an untouched form leaves the spec as it was); keys no field knows are kept for validation to name."""
    folded = dict(params)
    for field in fields:
        if field.name not in values:
            continue
        value = values[field.name]
        if field.name in params:
            if not _same(params[field.name], value):  # 2 shown as 2.0 is still the spec's 2
                folded[field.name] = value
        elif not _same(field.default, value):
            folded[field.name] = value
    return folded


def _same(a: Any, b: Any) -> bool:
    return a == b and isinstance(a, bool) == isinstance(b, bool) and (a is None) == (b is None)


def number_step(field: ParamInput) -> float | int:
    """A step of about a tenth of the default's order of magnitude (1 for integers)."""
    if field.number_type == "int":
        return 1
    default = field.default
    if not default:
        return 0.1
    return 10.0 ** (math.floor(math.log10(abs(default))) - 1)


def unknown_params(fields: list[ParamInput], params: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``params`` no field knows (left over from a YAML file)."""
    names = {f.name for f in fields}
    return {k: v for k, v in params.items() if k not in names}
