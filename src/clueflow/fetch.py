"""Offline compute nodes: everything a config reads from the Hugging Face hub, fetched once on a login node.

``clueflow fetch --config CONFIG`` (and the workflow's local rule ``fetch``, which every model job waits for)
downloads into the cache

* the model, when ``model.source`` is a hub id (at ``model.revision``; safetensors weights, config and tokenizer
  files, never pickle weights nor a repo's ``original/`` copy),
* every hub data set a loader reads (options ``hub``/``<prefix>hub`` with ``hub_config``/``hub_split``; without a
  ``hub_config`` every config of the data set, since a loader may pick its own default),
* the data of the lm-eval tasks in ``evaluate.general`` (lm-eval builds the tasks, which downloads their data),

and writes a JSON manifest of what it fetched. The cache is ``hub.cache_dir`` (models under ``<dir>/hub``, data
sets under ``<dir>/datasets``); null keeps the standard HF cache (``$HF_HOME``). Every job then runs with
:func:`job_env` in its environment (``rules/common.smk`` sets it in one place): the hub and the data sets offline,
the same cache. A job that would need the network stops with one line that names the field and says to run
``clueflow fetch``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .errors import ClueflowError, first_line
from .io import write_json
from .sources import cache_env, resolve_source

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
FETCH_HINT = "run `clueflow fetch --config <config>` on a login node"
# weight formats clueflow never reads (pickle), and the duplicate consolidated checkpoint some repos ship
IGNORE = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.gguf", "original/*"]


def job_env(config: dict[str, Any]) -> dict[str, str]:
    """The environment of every workflow job: the configured cache, hub and data sets offline."""
    return {**cache_env(config["hub"]["cache_dir"]), **dict.fromkeys(OFFLINE_VARS, "1")}


def is_offline() -> bool:
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE") for v in OFFLINE_VARS)


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(Path(constants.HF_HUB_CACHE).parent)  # a directory, not an identity


def offline_error(what: str, field: str, err: Exception) -> ClueflowError:
    """The one line for ``what`` that could not be loaded; on an offline node it says how to fill the cache."""
    cause = f"{type(err).__name__}: {first_line(err)}"
    if is_offline():
        return ClueflowError(f"cannot load {what} with the hub offline ({cause}); if it is not in the cache "
                             f"{_cache_dir()}, {FETCH_HINT}", field=field)
    return ClueflowError(f"cannot load {what}: {cause}", field=field)


def cached_model(repo_id: str, revision: str | None) -> str:
    """The snapshot directory of a hub model in the cache (offline: one line if it is not there)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, revision=revision, local_files_only=True)
    except Exception:  # LocalEntryNotFoundError, or a revision the cache does not hold
        raise ClueflowError(f"{repo_id!r} (revision {revision or 'main'}) is not in the offline cache "
                            f"{_cache_dir()}; {FETCH_HINT}", field="model.source") from None


def hub_data_sets(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Every hub data set the loaders of ``config`` read: set, field, hub id, config (None: all), split."""
    out = []
    for name, spec in sorted(config["datasets"].items()):
        options = (spec.get("options") or {}) if "loader" in spec else {}
        for key in sorted(k for k in options if k.endswith("hub")):
            prefix = key[:-3]
            out.append(dict(set=name, field=f"datasets.{name}.options.{key}", hub=options[key],
                            config=options.get(f"{prefix}hub_config"), split=options.get(f"{prefix}hub_split")))
    return out


def fetch_spec(config: dict[str, Any], standard_tasks: list[str]) -> dict[str, Any]:
    """What :func:`fetch` downloads for a validated config (the ``fetch`` rule's params)."""
    model = config["model"]
    try:
        hub = resolve_source(model["source"]).kind == "hub"
    except ClueflowError:  # not a hub id (a package or path that is missing): the model job says what is wrong
        hub = False
    return dict(cache_dir=config["hub"]["cache_dir"],
                model=dict(hub=model["source"], revision=model["revision"]) if hub else None,
                datasets=hub_data_sets(config), tasks=list(standard_tasks))


def fetch(spec: dict[str, Any], manifest: str | Path) -> dict[str, Any]:
    """Download everything ``spec`` (:func:`fetch_spec`) names into its cache; write and return the manifest."""
    out = dict(cache_dir=spec["cache_dir"], model=None, datasets=[], tasks=spec["tasks"])
    if spec["model"] or spec["datasets"] or spec["tasks"]:
        out.update(_download(spec))
    write_json(manifest, out)
    return out


def _download(spec: dict[str, Any]) -> dict[str, Any]:
    if any(m in sys.modules for m in ("huggingface_hub", "datasets", "lm_eval")):
        # their offline switches and cache paths are read once, at import
        raise RuntimeError("fetch must run before the Hugging Face libraries are imported")
    os.environ.update({**cache_env(spec["cache_dir"]), **dict.fromkeys(OFFLINE_VARS, "0")})
    from tqdm.auto import tqdm

    out: dict[str, Any] = dict(cache_dir=_cache_dir())
    if spec["model"]:
        from huggingface_hub import snapshot_download

        m = spec["model"]
        try:
            path = snapshot_download(m["hub"], revision=m["revision"], ignore_patterns=IGNORE)
        except Exception as err:
            raise ClueflowError(f"cannot download {m['hub']!r}: {type(err).__name__}: {first_line(err)}",
                                field="model.source") from None
        out["model"] = dict(hub=m["hub"], revision=m["revision"], snapshot=Path(path).name)
    out["datasets"] = [{**d, "configs": _fetch_data_set(d)}
                       for d in tqdm(spec["datasets"], desc="data sets", unit="set", disable=not spec["datasets"])]
    if spec["tasks"]:
        from lm_eval.tasks import TaskManager

        manager = TaskManager()
        for name in tqdm(spec["tasks"], desc="lm-eval tasks", unit="task"):
            try:
                manager.load([name])  # building a task downloads its data into the data sets cache
            except Exception as err:
                raise ClueflowError(f"cannot fetch lm-eval task {name!r}: {type(err).__name__}: {first_line(err)}",
                                    field="evaluate.general") from None
    return out


def _fetch_data_set(d: dict[str, Any]) -> list[str | None]:
    import datasets

    try:
        configs = [d["config"]] if d["config"] else datasets.get_dataset_config_names(d["hub"]) or [None]
        for config in configs:
            datasets.load_dataset(d["hub"], config, split=d["split"])
    except Exception as err:
        raise ClueflowError(f"cannot download {d['hub']!r}: {type(err).__name__}: {first_line(err)}",
                            field=d["field"]) from None
    return configs
