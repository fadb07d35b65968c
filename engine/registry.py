"""Name -> implementation registries.

Every extensible family (datasets, models, distillers, weightings, path methods) is a ``Registry``.
A new implementation is one file that decorates itself with ``@REGISTRY.register(...)``
plus one import line in its package's ``__init__`` so the decorator runs. Names in a
RunSpec are only ever looked up here: nothing in a spec is imported or evaluated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str
    meta: dict[str, Any] = field(default_factory=dict)


class UnknownName(KeyError):
    """Raised for a name that is not registered; its message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    """Registered names, plus families: names ``prefix:rest`` that a resolver turns into entries on demand.

    A family (``torchvision:resnet50``, ``timm:convnext_nano``) holds too many names to register one by one;
    its entries are made when first asked for and kept. ``names()`` and iteration list registered names only.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._families: dict[str, Callable[[str], Entry[T]]] = {}
        self._resolved: dict[str, Entry[T]] = {}

    def add_family(self, prefix: str, resolve: Callable[[str], Entry[T]]) -> None:
        """``resolve(name)`` gets the full name (``prefix:rest``) and returns its Entry or raises UnknownName."""
        if prefix in self._families:
            raise ValueError(f"{self.kind} family {prefix!r} is registered twice")
        self._families[prefix] = resolve

    def families(self) -> list[str]:
        return sorted(self._families)

    def register(self, name: str, description: str, **meta: Any) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, description, dict(meta))
            return obj

        return decorate

    def entry(self, name: str) -> Entry[T]:
        if name in self._entries:
            return self._entries[name]
        prefix, sep, _ = name.partition(":") if isinstance(name, str) else ("", "", "")
        if sep and prefix in self._families:
            if name not in self._resolved:
                self._resolved[name] = self._families[prefix](name)
            return self._resolved[name]
        families = "".join(f", {f}:<name>" for f in self.families())
        raise UnknownName(f"unknown {self.kind} {name!r} (known: {', '.join(self.names())}{families})")

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def __contains__(self, name: object) -> bool:
        if name in self._entries:
            return True
        if not isinstance(name, str) or name.partition(":")[0] not in self._families:
            return False
        try:
            self.entry(name)
        except UnknownName:
            return False
        return True

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())
