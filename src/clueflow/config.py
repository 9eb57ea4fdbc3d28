"""Workflow configuration: JSON-schema validation (unknown keys rejected) plus cross-field checks.

Errors are one line and name the file and the dotted key, e.g.
``config.yaml: datasets.ioi.nn: unknown key (allowed: generator, loader, n, options, seed, splits)``.
"""

from __future__ import annotations

import copy
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import ClueflowError, first_line
from .devices import DEVICE_PATTERN
from .layout import MODEL_NAME, NAME, RETAINS


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files("clueflow").joinpath("schemas/config.schema.yaml").read_text()


def schema_text() -> str:
    """The schema's YAML with the name patterns of :mod:`clueflow.layout` (the wildcard constraints use the same)."""
    text = _schema_text()
    for placeholder, pattern in (("@model@", MODEL_NAME), ("@retains@", RETAINS), ("@name@", NAME),
                                 ("@device@", DEVICE_PATTERN)):
        text = text.replace(placeholder, pattern.replace("\\", "\\\\"))
    return text


@lru_cache(maxsize=1)
def _parsed_schema() -> dict[str, Any]:
    # libyaml's parser where PyYAML has it: the Snakefile reads the schema at every start (0.3 s in Python)
    return yaml.load(schema_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def schema() -> dict[str, Any]:
    """The config schema (a copy: callers may edit it)."""
    return copy.deepcopy(_parsed_schema())


def key_schema(dotted: str) -> dict[str, Any]:
    """The schema of one config key (``circuits.edge_fraction``; a copy)."""
    node = _parsed_schema()
    for part in dotted.split("."):
        node = node["properties"][part]
    return copy.deepcopy(node)


def default(dotted: str) -> Any:
    """The schema's default of a config key (``circuits.edge_fraction``): the one source of every step's defaults
    (library functions and CLI flags)."""
    return key_schema(dotted)["default"]


def check_value(dotted: str, value: Any) -> str | None:
    """Why ``value`` is not allowed for config key ``dotted`` (type, range, finiteness), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    import jsonschema  # imported where configs are checked: the GPU image lacks it, its stages need only defaults

    spec = {k: v for k, v in key_schema(dotted).items() if k not in ("default", "description")}
    err = next(jsonschema.Draft202012Validator(spec).iter_errors(value), None)
    return None if err is None else err.message


def choices(dotted: str) -> list[Any]:
    """The values the schema allows for an enumerated config key (``filter.keep``)."""
    return list(key_schema(dotted)["enum"])


def _defaults_validator():
    """A Draft 2020-12 validator that also fills in ``default`` values (as Snakemake's ``validate`` does)."""
    import jsonschema

    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, sub):
        if isinstance(instance, dict):
            for key, prop in properties.items():
                if "default" in prop:
                    instance.setdefault(key, prop["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, sub)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(err) -> tuple[str, str]:
    """(dotted key, message) for the most useful reading of a schema error."""
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return _dotted([*err.absolute_path, extra[0]]), f"unknown key (allowed: {', '.join(allowed)})"
    if err.validator == "oneOf" and isinstance(err.instance, dict):
        return _dotted(err.absolute_path), "give exactly one of 'generator' or 'loader'"
    if err.validator == "required":
        return _dotted(err.absolute_path), err.message
    if err.validator == "pattern" and err.validator_value in _NAME_RULES:
        return _dotted(err.absolute_path), f"{err.instance!r} is not a valid name: {_NAME_RULES[err.validator_value]}"
    if err.validator == "type" and isinstance(err.instance, str) and _is_number(err.instance):
        return _dotted(err.absolute_path), (f"{err.message} (YAML reads {err.instance} as text: write it with a "
                                            f"decimal point, e.g. 1.0e-5)")
    return _dotted(err.absolute_path), f"{err.message}"


_NAME_RULES = {  # names become path components: say what is allowed, not the regex
    f"^{MODEL_NAME}$": "letters, digits, '.', '_' and '-', starting with a letter or a digit",
    f"^{NAME}$": "letters and digits, words joined by single underscores (no '.', '/', spaces or '__')",
    f"^{RETAINS}$": "data-set names (letters and digits, words joined by single underscores) joined by '+'",
}


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def validate_config(config: dict[str, Any], *, file: str | Path = "config") -> dict[str, Any]:
    """Validate ``config`` in place (filling defaults); raise :class:`ClueflowError` on the first defect."""
    validator = _defaults_validator()(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.path))))
    if errors:
        import jsonschema

        best = jsonschema.exceptions.best_match(errors, key=jsonschema.exceptions.relevance)
        field, message = _describe(best)
        raise ClueflowError(message, file=file, field=field)
    datasets = config["datasets"]
    for key, names in (("forget", [config["forget"]]), ("retain", config["retain"])):
        for name in names:
            if name not in datasets:
                raise ClueflowError(f"{name!r} is not a key of datasets ({', '.join(sorted(datasets))})",
                                    file=file, field=key)
    if config["forget"] in config["retain"]:
        raise ClueflowError(f"{config['forget']!r} is both the forget set and a retain set", file=file,
                            field="retain")
    for name, spec in datasets.items():
        splits = spec.get("splits")
        if splits and sum(splits.values()) > 1 + 1e-9:
            raise ClueflowError(f"split fractions sum to {sum(splits.values()):g} > 1", file=file,
                                field=f"datasets.{name}.splits")
    return config


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` merged over ``base``, mapping by mapping (as Snakemake merges ``--configfile`` files)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class _StrictLoader(yaml.SafeLoader):
    """YAML without duplicate keys (the last one would silently win) and without aliases (a few hundred bytes of
    nested aliases expand to billions of nodes)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"aliases (*{event.anchor}) are not allowed, line {event.start_mark.line + 1}")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.YAMLError(f"duplicate key {key!r}, line {key_node.start_mark.line + 1}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_config(path: str | Path) -> dict[str, Any]:
    """A config file's mapping, unvalidated (:class:`clueflow.plan.Plan` validates)."""
    path = Path(path)
    try:
        config = yaml.load(path.read_text(), Loader=_StrictLoader)
    except FileNotFoundError:
        raise ClueflowError("config file does not exist", file=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ClueflowError(f"cannot read the config file ({type(err).__name__})", file=path) from None
    except yaml.YAMLError as err:
        raise ClueflowError(f"invalid YAML: {first_line(err)}", file=path) from None
    if not isinstance(config, dict):
        raise ClueflowError("config must be a mapping", file=path)
    return config
