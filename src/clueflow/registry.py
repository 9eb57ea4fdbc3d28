"""Name → implementation registries: a new generator, loader or method is one decorated function.

A registration declares the options its implementation reads, each with what it accepts: a type (``int``,
``NUMBER``, ``str``, ``bool``, ``list``, ``dict``) or a tuple of alternatives (types or literal values, e.g.
``(NUMBER, "clue")``, ``("text", "letter")``). Config checks reject unknown keys and wrongly typed values at start.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from .errors import ClueflowError

T = TypeVar("T", bound=Callable)
NUMBER = (int, float)  # an int where a float is expected is fine; a bool is neither


def _accepts(spec: Any, value: Any) -> bool:
    for alt in spec if isinstance(spec, tuple) and spec is not NUMBER else (spec,):
        if alt is NUMBER:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif isinstance(alt, type):
            if isinstance(value, alt) and not (isinstance(value, bool) and alt is int):
                return True
        elif value == alt:
            return True
    return False


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "a mapping"}


def _describe(spec: Any) -> str:
    alts = spec if isinstance(spec, tuple) and spec is not NUMBER else (spec,)
    return " or ".join("a number" if a is NUMBER else _TYPE_NAMES.get(a, a.__name__) if isinstance(a, type)
                       else repr(a) for a in alts)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._options: dict[str, dict[str, Any]] = {}
        self._requires: dict[str, frozenset[str]] = {}

    def register(self, name: str, *, options: dict[str, Any] | None = None,
                 requires: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Register under ``name``; ``options``: option key → what it accepts (see the module docstring);
        ``requires``: what the implementation needs of its input, checked at start (e.g. ``dense_mlp``)."""
        def deco(fn: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = fn
            self._options[name] = dict(options or {})
            self._requires[name] = frozenset(requires)
            return fn

        return deco

    def requires(self, name: str) -> frozenset[str]:
        return self._requires[name]

    def check_options(self, name: str, options: dict, *, field: str, file: str | None = None) -> None:
        """Reject option keys that ``name`` does not read (a typo would otherwise be silently ignored) and values of
        the wrong type."""
        allowed = self._options[name]
        for key, value in options.items():
            if key not in allowed:
                raise ClueflowError(f"unknown option for {self.kind} {name!r} (allowed: {', '.join(allowed) or 'none'})",
                                    file=file, field=f"{field}.{key}")
            if not _accepts(allowed[key], value):
                raise ClueflowError(f"{value!r} is not {_describe(allowed[key])}", file=file, field=f"{field}.{key}")

    def get(self, name: str, *, file: str | None = None, field: str | None = None) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ClueflowError(
                f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}", file=file, field=field
            ) from None

    def options(self, name: str) -> tuple[str, ...]:
        return tuple(self._options[name])

    def describe_options(self, name: str) -> list[str]:
        """``key (what it accepts)`` for each option of ``name``, e.g. ``mode ('paper' or 'published')``."""
        return [f"{key} ({_describe(spec)})" for key, spec in self._options[name].items()]

    def names(self) -> list[str]:
        return sorted(self._items)
