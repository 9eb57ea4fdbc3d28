"""Name → implementation registries: a new generator, loader or method is one decorated function."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import ClueflowError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._options: dict[str, tuple[str, ...]] = {}

    def register(self, name: str, *, options: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Register under ``name``; ``options`` are the option keys the implementation reads."""
        def deco(fn: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = fn
            self._options[name] = tuple(options)
            return fn

        return deco

    def check_options(self, name: str, options: dict, *, field: str, file: str | None = None) -> None:
        """Reject option keys that ``name`` does not read (a typo would otherwise be silently ignored)."""
        allowed = self._options[name]
        for key in options:
            if key not in allowed:
                raise ClueflowError(f"unknown option for {self.kind} {name!r} (allowed: {', '.join(allowed) or 'none'})",
                                    file=file, field=f"{field}.{key}")

    def get(self, name: str, *, file: str | None = None, field: str | None = None) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ClueflowError(
                f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}", file=file, field=field
            ) from None

    def options(self, name: str) -> tuple[str, ...]:
        return self._options[name]

    def names(self) -> list[str]:
        return sorted(self._items)
