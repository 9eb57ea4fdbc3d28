"""Name → implementation registries: a new generator, loader or method is one decorated function."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import ClueflowError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(fn: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = fn
            return fn

        return deco

    def get(self, name: str, *, file: str | None = None, field: str | None = None) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ClueflowError(
                f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}", file=file, field=field
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)
