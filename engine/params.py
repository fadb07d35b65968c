"""Typed plugin parameters: every distiller, weighting and path method declares its ``params`` as a pydantic model.

A plugin sets ``params_model`` to a subclass of ``Params`` whose fields carry a default, bounds and a
one-line ``description``; its constructor gets the validated fields as ``self.params``. Validation,
the CLI listings and the Configure forms all read the same model. A leaf module: pydantic only.
"""
from __future__ import annotations

import math
import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


class Params(BaseModel):
    """Strict, closed, immutable: a string where a number belongs and an unknown name are both refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class NoParams(Params):
    """This plugin takes no parameters."""


class ParamsError(ValueError):
    """Bad plugin parameters; ``problems`` is a list of (field, message), field '' for the whole set."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{field}: {message}" if field else message for field, message in problems))

    def lines(self, where: str) -> list[str]:
        """'where.field: message' per problem (where: 'paths[2].params', 'weighting.params' or 'method.params')."""
        return [f"{where}.{field}: {message}" if field else f"{where}: {message}" for field, message in self.problems]


def parse_params(model: type[Params], params: dict[str, Any] | Params | None) -> Params:
    """The validated parameters, or ParamsError naming each bad field."""
    if isinstance(params, model):
        return params
    try:
        return model.model_validate(dict(params or {}))
    except ValidationError as err:
        known = ", ".join(model.model_fields) or "none"
        problems = []
        for e in err.errors(include_url=False):
            field = ".".join(str(part) for part in e["loc"])
            message = f"unknown parameter (known: {known})" if e["type"] == "extra_forbidden" else e["msg"]
            problems.append((field, message))
        raise ParamsError(problems) from None


# ---------------------------------------------------------------- describing a model's fields
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def field_kind(info: FieldInfo) -> tuple[str, bool, tuple[Any, ...]]:
    """(kind, optional, choices): kind is bool, int, float, choice, str or other."""
    annotation, optional = _unwrap_optional(info.annotation)
    if typing.get_origin(annotation) is Literal:
        return "choice", optional, typing.get_args(annotation)
    for kind in (bool, int, float, str):
        if annotation is kind:
            return kind.__name__, optional, ()
    return "other", optional, ()


def field_bounds(info: FieldInfo) -> dict[str, float]:
    """{'gt': 0, 'le': 1, ...} from the field's constraints."""
    found: dict[str, float] = {}
    for meta in info.metadata:
        for name, _ in _BOUNDS:
            value = getattr(meta, name, None)
            if value is not None:
                found[name] = value
    return found


def type_text(info: FieldInfo) -> str:
    kind, optional, choices = field_kind(info)
    text = " | ".join(repr(c) for c in choices) if kind == "choice" else kind
    if kind == "other":
        text = str(info.annotation).replace("typing.", "")
    return f"{text} | None" if optional and kind != "other" else text


def bounds_text(info: FieldInfo) -> str:
    bounds = field_bounds(info)
    return ", ".join(f"{symbol} {bounds[name]:g}" for name, symbol in _BOUNDS if name in bounds)


def default_of(info: FieldInfo) -> Any:
    return None if info.default is PydanticUndefined else info.default


def describe_params(model: type[Params]) -> list[dict[str, Any]]:
    """One dict per field: name, type, default, bounds (text), description."""
    rows = []
    for name, info in model.model_fields.items():
        default = default_of(info)
        rows.append({"name": name, "type": type_text(info), "default": default,
                     "bounds": bounds_text(info), "description": info.description or ""})
    return rows


def format_default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value):
        text = f"{value:g}"
        return text if any(c in text for c in ".e") else f"{text}.0"
    return repr(value) if isinstance(value, str) else str(value)
