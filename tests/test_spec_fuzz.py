"""Property-based fuzzing of the spec loader: whatever the bytes, text or data, the only failure is a SpecError.

A SpecError is what the CLI prints as 'error: ...' with exit code 2; any other exception would reach the user as
a traceback. Example counts are bounded so the file runs in seconds; hypothesis shrinks any failure it finds.
"""
from __future__ import annotations

import copy
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bad_inputs.corpus import BASE
from engine.spec import SpecError, apply_overrides, parse_spec, spec_from_yaml
from engine.spec_yaml import spec_data_from_bytes

FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

#: fragments that steer random text into the YAML features an attack uses: anchors, aliases, merges, tags,
#: flow and block nesting, keys given twice, special floats and long numbers
TOKENS = ["&a ", "*a", "&b ", "*b", "<<: ", "!!python/object ", "!!binary ", "!!set ", "!!float ", "[", "]", "{",
          "}", ", ", ": ", "- ", "\n", "  ", "? ", "|\n", ">\n", "'", '"', "#", "epochs", "paths", "name",
          "weighting", "params", "arch_params", ".nan", ".inf", "-.inf", "1e309", "9" * 30, "true", "null", "~",
          "2001-13-45", "0x1F", "0o17", "\t", "\x00", "\x1b[31m", "\u202e", "é"]


def _only_spec_errors(load: Any, value: Any) -> None:
    try:
        load(value)
    except SpecError as err:
        assert err.errors and all(isinstance(line, str) and line for line in err.errors)


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_give_a_spec_or_a_spec_error(raw: bytes) -> None:
    _only_spec_errors(lambda b: parse_spec(spec_data_from_bytes(b, "upload.yaml")), raw)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS) | st.text(max_size=8), max_size=60).map("".join))
def test_yaml_like_text_gives_a_spec_or_a_spec_error(text: str) -> None:
    _only_spec_errors(spec_from_yaml, text)


#: YAML-shaped values: what a spec file can hold once loaded, numbers at their extremes included
LEAVES = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
          | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
#: the fields of a spec, nested ones by their dotted path, that a mutation replaces
FIELDS = ["name", "version", "epochs", "seed", "device", "dataset", "dataset.name", "dataset.batch_size",
          "dataset.normalize", "dataset.val_fraction", "teachers", "teachers.0", "teachers.0.id",
          "teachers.0.source", "teachers.0.arch_params", "student", "student.arch_params", "paths", "paths.0",
          "paths.0.id", "paths.0.weight", "paths.0.params", "weighting", "weighting.params", "method",
          "optimizer", "optimizer.lr", "schedule.milestones", "diagnostics", "teacher_cache", "aggregator"]


def _mutated(changes: list[tuple[str, Any]]) -> dict[str, Any]:
    """BASE with each (dotted field, value) set, skipping a field whose parent an earlier change replaced."""
    data = copy.deepcopy(BASE)
    for path, value in changes:
        *parents, last = path.split(".")
        node: Any = data
        for key in parents:
            node = _child(node, key)
        if isinstance(node, dict):
            node[last] = value
        elif _child(node, last) is not None:
            node[int(last)] = value
    return data


def _child(node: Any, key: str) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and key.isdigit() and int(key) < len(node):
        return node[int(key)]
    return None


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(FIELDS), VALUES), min_size=1, max_size=4))
def test_mutated_specs_give_a_spec_or_a_spec_error(changes: list[tuple[str, Any]]) -> None:
    data = _mutated(changes)
    _only_spec_errors(parse_spec, data)
    # the same data written as YAML and read back goes through the loader too
    _only_spec_errors(spec_from_yaml, yaml.safe_dump(data, allow_unicode=True))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(FIELDS), st.sampled_from(TOKENS) | st.text(max_size=20)), max_size=4))
def test_set_overrides_give_a_spec_or_a_spec_error(overrides: list[tuple[str, str]]) -> None:
    _only_spec_errors(lambda o: parse_spec(apply_overrides(copy.deepcopy(BASE), o)),
                      [f"{key}={value}" for key, value in overrides])
