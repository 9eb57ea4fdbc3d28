"""Code hashes from the import closure: editing any package module a step runs reruns that step's jobs.

Snakemake tracks a rule's own script but not the library it imports. :func:`code_hash` reads a workflow script's
``clueflow`` imports and follows every ``import`` / ``from … import`` statement (module level or inside
functions) through the package's source with :mod:`ast` — nothing is imported, nothing is listed by hand — and
hashes the source of every module reached, the packages that contain them included. A package that imports all
of its submodules at run time (``pkgutil.iter_modules(__path__)``: the method registries) reaches all of them.
"""

from __future__ import annotations

import ast
import hashlib
import re
import textwrap
from functools import lru_cache
from pathlib import Path
from typing import Iterator

PACKAGE = "clueflow"
_ITER_MODULES = re.compile(r"iter_modules\(\s*__path__")
ROOT = Path(__file__).resolve().parent


def module_file(name: str) -> Path | None:
    """The source file of package module ``name`` (``clueflow.a.b``), or None when it is not a module."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


_IMPORT_LINE = re.compile(r"^[ \t]*(?:import|from)[ \t]")


def _import_statements(source: str) -> Iterator[ast.stmt]:
    """The import statements of ``source`` (module level or indented in functions), each parsed on its own: a
    whole-module parse would cost ~10 ms a module at every workflow start. A line in a string that reads like an
    import counts too (a hash that covers more, never less)."""
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        if not _IMPORT_LINE.match(lines[i]):
            i += 1
            continue
        j = i
        while "(" in lines[i] and ")" not in "\n".join(lines[i:j + 1]) and j + 1 < len(lines):
            j += 1  # a parenthesized name list over several lines
        try:
            yield from ast.parse(textwrap.dedent("\n".join(lines[i:j + 1]))).body
        except SyntaxError:
            pass
        i = j + 1


@lru_cache(maxsize=None)  # every rule's closure walks the same modules: scan each source once per process
def imports_of(source: str, module: str, is_package: bool) -> frozenset[str]:
    """Package modules that ``source`` (the text of ``module``) imports, with the packages containing them."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_statements(source):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # submodules imported by name
    if is_package and _ITER_MODULES.search(source):  # a registry that imports every module of its package
        found.update(f"{module}.{p.stem}" for p in module_file(module).parent.glob("*.py") if p.name != "__init__.py")
    return frozenset(parent for name in found if module_file(name) for parent in _parents(name))


@lru_cache(maxsize=None)
def closure(*roots: str) -> tuple[str, ...]:
    """Every package module reachable from ``roots`` by imports, sorted."""
    seen: set[str] = set()
    todo = [p for r in roots if module_file(r) for p in _parents(r)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        todo += imports_of(path.read_text(), name, path.name == "__init__.py") - seen
    return tuple(sorted(seen))


def script_imports(script: str | Path) -> tuple[str, ...]:
    """The package modules a workflow script imports directly."""
    tree = ast.parse(Path(script).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return tuple(sorted(n for n in names if module_file(n)))


def code_hash(script: str | Path) -> str:
    """Hash of the source of every package module ``script`` runs (its import closure)."""
    digest = hashlib.sha256()
    for name in closure(*script_imports(script)):
        digest.update(name.encode() + b"\0" + module_file(name).read_bytes() + b"\0")
    return digest.hexdigest()[:16]
