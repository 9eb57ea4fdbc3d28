"""Atomic artifact writing: every file or directory appears complete or not at all, and replaces only what it owns.

A writer produces ``<name>.tmp-<pid>-<random>`` next to the target and renames it into place, so a job
killed mid-write leaves only a temp file that no rule declares as output. Before anything is written the target
is checked (:func:`check_target`): never the working directory or one of its parents, a repository root, an
input of the running command (:func:`command_inputs`), a directory where a file is written, or an existing
directory that is not an artifact of the same kind (recognised by its provenance file, ``marker``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


_UMASK = os.umask(0)
os.umask(_UMASK)


_INPUTS: list[Path] = []  # inputs of the running command: never a write target
REPOSITORY_MARKERS = (".git", "Snakefile", "pyproject.toml")


@contextlib.contextmanager
def command_inputs(paths) -> Iterator[None]:
    """Declare the running command's inputs: while the block runs, no writer may replace them or a folder that
    holds them."""
    added = [Path(p).resolve() for p in paths]
    _INPUTS.extend(added)
    try:
        yield
    finally:
        del _INPUTS[len(_INPUTS) - len(added):]


INTO = "into"  # a ``marker`` meaning: a folder the command writes its own files into (it may exist and hold others)


def check_target(target: str | Path, *, directory: bool = False, marker: str | None = None) -> None:
    """Refuse a write target this writer does not own (one-line :class:`ClueflowError` naming it)."""
    from .errors import ClueflowError

    path = Path(target).resolve()
    cwd = Path.cwd().resolve()
    if path == cwd or path in cwd.parents:
        raise ClueflowError("refusing to write over the working directory or one of its parents", file=target)
    if any((path / m).exists() for m in REPOSITORY_MARKERS):
        raise ClueflowError("refusing to write over a repository root", file=target)
    for inp in _INPUTS:
        if path == inp or path in inp.parents:
            raise ClueflowError("refusing to write over an input of this command", file=target)
    if not path.exists() and not path.is_symlink():
        return
    if marker == INTO:
        if not path.is_dir():
            raise ClueflowError("exists and is not a directory", file=target)
        return
    if not directory and (path.is_dir() or not path.is_file()):
        raise ClueflowError("refusing to replace a directory (or other non-file) with a file", file=target)
    if directory and not (path.is_dir() and marker and (path / marker).is_file()):
        raise ClueflowError(f"refusing to replace an existing path that is not an artifact of this kind (no {marker} "
                            f"in it): remove it yourself or choose another path", file=target)


@contextlib.contextmanager
def atomic_path(target: str | Path, *, directory: bool = False, marker: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` if the block succeeds. A directory
    artifact is recognised by its provenance file ``marker``: an existing target is replaced only if it has one."""
    target = Path(target)
    check_target(target, directory=directory, marker=marker)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-{os.getpid()}-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; artifacts are shared like any other file
    if directory:
        os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if directory and marker and not (tmp / marker).is_file():
            raise RuntimeError(f"directory artifact written without its provenance file {marker}")
        check_target(target, directory=directory, marker=marker)  # again: the block may have run for hours
        if directory and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | Path) -> Any:
    """A JSON artifact's content; one that cannot be read or parsed is a user error naming the file."""
    from .errors import ClueflowError, first_line

    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ClueflowError(f"not a readable JSON file: {first_line(err)}", file=path) from None


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(path: str | Path, df: pd.DataFrame, metadata: dict[str, Any] | None = None) -> None:
    """Write ``df`` with optional JSON metadata stored under the schema key ``clueflow``."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata is not None:
        meta = dict(table.schema.metadata or {})
        meta[b"clueflow"] = json.dumps(metadata, sort_keys=True, default=str).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_table(path: str | Path, *, what: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a parquet artifact; a missing or unreadable file is a one-line :class:`ClueflowError`."""
    from .errors import ClueflowError, first_line

    path = Path(path)
    if not path.is_file():
        raise ClueflowError(f"{what} file does not exist", file=path)
    try:
        return pd.read_parquet(path, columns=columns)
    except Exception as err:  # pyarrow raises several types for corrupt files
        raise ClueflowError(f"not a readable parquet file ({type(err).__name__}: {first_line(err)})",
                            file=path) from None


def read_parquet_metadata(path: str | Path) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"clueflow")
    return json.loads(raw) if raw else {}


def write_table(df: pd.DataFrame, parquet: str | Path, markdown: str | Path | None = None,
                metadata: dict[str, Any] | None = None) -> None:
    """A result table as parquet (+ markdown for reading and embedding in the README)."""
    write_parquet(parquet, df, metadata=metadata)
    if markdown is not None:
        write_text(markdown, df.to_markdown(index=False, floatfmt=".3f") + "\n")
