"""Workflow configuration: JSON-schema validation (unknown keys rejected) plus cross-field checks.

Errors are one line and name the file and the dotted key, e.g.
``config.yaml: datasets.ioi.nn: unknown key (allowed: generator, loader, n, options, seed, splits)``.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ClueflowError


@lru_cache(maxsize=1)
def _schema_text() -> str:
    return resources.files("clueflow").joinpath("schemas/config.schema.yaml").read_text()


def schema() -> dict[str, Any]:
    return yaml.safe_load(_schema_text())


def _key(dotted: str) -> dict[str, Any]:
    node = schema()
    for part in dotted.split("."):
        node = node["properties"][part]
    return node


def default(dotted: str) -> Any:
    """The schema's default of a config key (``circuits.edge_fraction``): the one source of every step's defaults
    (library functions and CLI flags)."""
    return _key(dotted)["default"]


def choices(dotted: str) -> list[Any]:
    """The values the schema allows for an enumerated config key (``filter.keep``)."""
    return list(_key(dotted)["enum"])


def _defaults_validator():
    """A Draft 2020-12 validator that also fills in ``default`` values (as Snakemake's ``validate`` does)."""
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


def _describe(err: jsonschema.ValidationError) -> tuple[str, str]:
    """(dotted key, message) for the most useful reading of a schema error."""
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return _dotted([*err.absolute_path, extra[0]]), f"unknown key (allowed: {', '.join(allowed)})"
    if err.validator == "oneOf" and isinstance(err.instance, dict):
        return _dotted(err.absolute_path), "give exactly one of 'generator' or 'loader'"
    if err.validator == "required":
        return _dotted(err.absolute_path), err.message
    if err.validator == "type" and isinstance(err.instance, str) and _is_number(err.instance):
        return _dotted(err.absolute_path), (f"{err.message} (YAML reads {err.instance} as text: write it with a "
                                            f"decimal point, e.g. 1.0e-5)")
    return _dotted(err.absolute_path), f"{err.message}"


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


def read_config(path: str | Path) -> dict[str, Any]:
    """A config file's mapping, unvalidated (:class:`clueflow.plan.Plan` validates)."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ClueflowError("config file does not exist", file=path) from None
    except yaml.YAMLError as err:
        raise ClueflowError(f"invalid YAML: {str(err).splitlines()[0]}", file=path) from None
    if not isinstance(config, dict):
        raise ClueflowError("config must be a mapping", file=path)
    return config
