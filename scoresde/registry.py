"""One registry per kind of variant (SDEs, schedules, time grids, solvers, weightings...).

A registry maps the CLI name of a variant to the object that implements it. Lookups of an
unknown name raise a ``ValueError`` that lists the valid names, and the CLI reads its
choices from the registries, so there is never a hand-kept list of names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

V = TypeVar("V")


class Registry(Mapping[str, V], Generic[V]):
    """A name -> object mapping with helpful errors.

    >>> solvers = Registry("solver")
    >>> @solvers.register("euler")
    ... def euler(): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, V] = {}

    def register(self, name: str) -> Callable[[V], V]:
        """Decorator registering ``obj`` under ``name`` (names are unique)."""

        def add(obj: V) -> V:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> V:  # type: ignore[override]
        """Return the variant called ``name``; unknown names raise ``ValueError``."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} must be given by name (a str), got {type(name).__name__}")
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self._items)}") from None

    def __getitem__(self, name: str) -> V:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        # Mapping's default catches KeyError, which get() turns into ValueError
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return list(self._items)
