"""Name → implementation registries: a new generator, loader or method is one decorated function.

A registration declares the options its implementation reads, each with what it accepts: a type (``int``,
``NUMBER``, ``str``, ``bool``, ``list``, ``dict``) or a tuple of alternatives (types or literal values, e.g.
``(NUMBER, "clue")``, ``("text", "letter")``). Config checks reject unknown keys and wrongly typed values at start.

It may also declare the values an implementation uses for options not given (``defaults``), per named mode where
it has several (``modes``: mode → its defaults; the first is the default mode and the ``mode`` option takes their
names), and groups of options of which at most one may be given (``exclusive``: giving one drops the others'
defaults). :meth:`Registry.resolve` applies them; the implementation reads every declared default from its options.
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
        self._defaults: dict[str, dict[str, Any]] = {}
        self._modes: dict[str, dict[str, dict[str, Any]]] = {}
        self._exclusive: dict[str, tuple[tuple[str, ...], ...]] = {}

    def register(self, name: str, *, options: dict[str, Any] | None = None, requires: tuple[str, ...] = (),
                 defaults: dict[str, Any] | None = None, modes: dict[str, dict[str, Any]] | None = None,
                 exclusive: tuple[tuple[str, ...], ...] = ()) -> Callable[[T], T]:
        """Register under ``name``; ``options``: option key → what it accepts; ``defaults``, ``modes``,
        ``exclusive``: see the module docstring; ``requires``: what the implementation needs of its input, checked
        at start (e.g. ``dense_mlp``)."""
        options = {**({"mode": tuple(modes)} if modes else {}), **(options or {})}
        for given in [defaults or {}, *(modes or {}).values()]:
            for key, value in given.items():
                if key not in options or not _accepts(options[key], value):
                    raise ValueError(f"{self.kind} {name!r}: default {key}={value!r} is not a valid option value")

        def deco(fn: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = fn
            self._options[name] = options
            self._requires[name] = frozenset(requires)
            self._defaults[name] = dict(defaults or {})
            self._modes[name] = dict(modes or {})
            self._exclusive[name] = tuple(exclusive)
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
        for group in self._exclusive[name]:
            if len(given := [k for k in group if k in options]) > 1:
                raise ClueflowError(f"give one of {', '.join(group)}, not {' and '.join(given)}", file=file,
                                    field=f"{field}.{given[1]}")

    def resolve(self, name: str, options: dict) -> dict:
        """``options`` (checked) completed with ``name``'s defaults: its own, then its mode's (the mode given or
        the first), less those of an exclusive group one of whose options is given."""
        modes = self._modes[name]
        mode = options.get("mode", next(iter(modes), None))
        out = {**self._defaults[name], **modes.get(mode, {}), **({"mode": mode} if modes else {})}
        for group in self._exclusive[name]:
            if any(k in options for k in group):
                for k in group:
                    out.pop(k, None)
        return {**out, **options}

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

    def describe_defaults(self, name: str) -> list[str]:
        """``key value, ...`` of ``name``'s defaults; per mode ``mode <mode>: key value, ...`` where it has modes."""
        def shown(d):
            return ", ".join(f"{k} {v}" for k, v in d.items())
        modes, own = self._modes[name], self._defaults[name]
        if not modes:
            return [shown(own)] if own else []
        return [f"mode {mode}: {shown({**own, **d}) or '-'}" for mode, d in modes.items()]

    def names(self) -> list[str]:
        return sorted(self._items)
