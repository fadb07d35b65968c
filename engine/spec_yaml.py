"""Spec text to plain data, safely: the YAML of every spec file, upload, --set value and form field a user gives.

A spec is a few KB of YAML; the loader refuses what a spec never needs and an attacker would use (huge files,
deep nesting, alias bombs, duplicate keys) before building it, and every problem is a SpecError whose lines
name the file or field at fault. Validation of the data's fields is engine.spec's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

#: a spec is a few KB (1,000 paths fit in about 150 KB); a larger file is a mistake or an attack, refused before
#: it is parsed: the pure-Python YAML parser needs seconds per 100 KB
MAX_SPEC_BYTES = 256 << 10
#: nesting of mappings and lists; real specs nest about 5 deep, and a deep one would exhaust Python's stack
MAX_YAML_DEPTH = 50
#: values a spec may hold once its aliases (*name) are expanded: bounds what an alias bomb can build
MAX_YAML_VALUES = 100_000


class SpecError(ValueError):
    """A spec that cannot be used; ``errors`` holds one 'field.path: problem' line each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


class _SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses what a spec never needs and an attacker would use: a key given twice (the
    second would silently win), nesting deeper than MAX_YAML_DEPTH, and aliases that expand past
    MAX_YAML_VALUES values (an alias bomb: a few lines that build billions of values)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> yaml.Node:
        # composing recurses once per level: stop before Python's stack does
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1
                raise SpecError([f"yaml: nested deeper than {MAX_YAML_DEPTH} levels (line {line})"])
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _check_expansion(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` then a key of base: an override, as YAML means it
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: SafeLoader names it below
            if first is not None:
                raise SpecError([f"yaml: duplicate key {key!r} (lines {first} and {line}): give each key once"])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: yaml.Node | None) -> None:
    """Refuse a document whose aliases expand past MAX_YAML_VALUES values or MAX_YAML_DEPTH levels, counting
    each shared node once per use without building the expansion."""
    known: dict[int, tuple[int, int] | None] = {}  # id(node) -> (values, depth) once counted; None while counting

    def measure(node: yaml.Node, level: int) -> tuple[int, int]:
        if id(node) in known:
            found = known[id(node)]
            if found is None:
                raise SpecError(["yaml: an alias refers to a collection that contains it; write the values out"])
        else:
            known[id(node)] = None
            children = [] if isinstance(node, yaml.ScalarNode) else (
                [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value)
            parts = [measure(child, level + 1) for child in children]
            found = known[id(node)] = (1 + sum(v for v, _ in parts), 1 + max((d for _, d in parts), default=0))
        values, depth = found
        if level + depth > MAX_YAML_DEPTH:
            raise SpecError([f"yaml: aliases nest the spec deeper than {MAX_YAML_DEPTH} levels; write the values out"])
        if values > MAX_YAML_VALUES:
            raise SpecError([f"yaml: the spec holds {values:,} values (each alias *name counted as the values it "
                             f"repeats), more than the {MAX_YAML_VALUES:,} a spec may hold"])
        return found

    if root is not None:
        measure(root, 0)


def spec_data_from_yaml(text: str) -> Any:
    """The plain data of spec text; SpecError when it is too large, not YAML, or uses what _SpecLoader refuses."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError([f"spec: {len(text):,} characters, more than the {MAX_SPEC_BYTES:,} a spec may have"])
    try:
        return load_yaml_value(text)
    except yaml.YAMLError as err:
        raise SpecError([f"yaml: {err}".replace("\n", " ")]) from None


def load_yaml_value(text: str) -> Any:
    """YAML text through _SpecLoader, for every YAML a user gives (files, uploads, --set values, form fields):
    SpecError for what it refuses, yaml.YAMLError for what is not YAML."""
    loader = _SpecLoader(text)
    try:
        return loader.get_single_data()
    except SpecError:
        raise
    except (ValueError, OverflowError, LookupError, TypeError) as err:
        # a scalar YAML resolves but its constructor cannot build: a 5,000-digit int, `!!float ''`, a 13th month
        raise SpecError([f"yaml: a value cannot be read ({type(err).__name__}: {err})"]) from None
    finally:
        loader.dispose()


def spec_data_from_bytes(raw: bytes, where: str = "spec") -> Any:
    """The plain data of an uploaded or read spec file: UTF-8 YAML text of at most MAX_SPEC_BYTES bytes."""
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError([f"{where}: larger than the {MAX_SPEC_BYTES:,} bytes a spec may have; is it a spec file?"])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SpecError([f"{where}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); a spec is "
                         f"a YAML text file saved as UTF-8"]) from None
    return spec_data_from_yaml(text)


def load_spec_data(path: str | Path) -> Any:
    """The plain data of a spec file (before validation, so overrides can be applied first)."""
    path = Path(path)
    try:
        if not path.is_file():  # a folder, a device or a pipe: never read (a pipe would block forever)
            problem = "no such file" if not path.exists() else "not a regular file"
            raise SpecError([f"{path}: cannot read ({problem})"])
        with path.open("rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)  # never more: a huge file is refused without reading it whole
    except OSError as err:
        raise SpecError([f"{path}: cannot read ({err.strerror})"]) from None
    return spec_data_from_bytes(raw, str(path))
