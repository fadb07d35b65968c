"""Name -> implementation registries.

Every extensible family (datasets, models, distillers, aggregators) is a ``Registry``.
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
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str, **meta: Any) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, description, dict(meta))
            return obj

        return decorate

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(
                f"unknown {self.kind} {name!r} (known: {', '.join(self.names())})"
            ) from None

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())
