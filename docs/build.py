"""Regenerate the parts of the docs that are computed from the code, so that they cannot drift from it.

    .venv/bin/python docs/build.py          # rewrite every generated block and the workflow picture
    .venv/bin/python docs/build.py --check  # exit 1 naming each part that is not current (tests/test_docs.py)

Generated: the key table of docs/configuration.md (from src/clueflow/schemas/config.schema.yaml), the bad-input
tables of docs/reliability.md (from tests/test_hostile_inputs.py and tests/test_bad_inputs.py), and
docs/figures/rulegraph.{dot,svg} (from ``snakemake --rulegraph`` on the default config; the SVG needs graphviz's
``dot``). A generated block sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``; everything
outside it is written by hand.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
DOT, SVG = DOCS / "figures" / "rulegraph.dot", DOCS / "figures" / "rulegraph.svg"


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _type(node: dict) -> str:
    if "enum" in node:
        return " | ".join("null" if v is None else f"`{v}`" for v in node["enum"])
    t = node.get("type", "object" if "properties" in node else "")
    t = " or ".join(t) if isinstance(t, list) else t
    if "oneOf" in node and not t:
        t = " or ".join(_type(n) for n in node["oneOf"])
    bounds = [f"{op} {node[k]}" for k, op in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
                                              ("exclusiveMaximum", "<"), ("minItems", "items ≥")) if k in node]
    return ", ".join([t or "any", *bounds]) if bounds else (t or "any")


def config_rows(node: dict, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) of every key the schema allows, depth first in the schema's order;
    ``<name>`` stands for a key the user chooses (a data set, a run)."""
    rows = []
    for key, child in node.get("properties", {}).items():
        dotted = f"{prefix}{key}"
        default = json.dumps(child["default"]) if "default" in child else ""
        rows.append((dotted, _type(child), default, child.get("description", "")))
        rows += config_rows(child, dotted + ".")
        extra = child.get("additionalProperties")
        if isinstance(extra, dict) and "properties" in extra:  # a map of named entries (a leaf map: its key row)
            name = {"datasets": "<name>", "unlearn.methods": "<run>"}.get(dotted, "<key>")
            rows.append((f"{dotted}.{name}", _type(extra), "", extra.get("description", "")))
            rows += config_rows(extra, f"{dotted}.{name}.")
    return rows


RUN = "unlearn.methods.<run>."


def configuration() -> str:
    from clueflow.config import schema

    rows = config_rows(schema())
    keys = {k for k, *_ in rows}
    # a run's own setting without a description of its own is the section's setting, for that run
    rows = [(k, t, d, m or (f"As `unlearn.{k[len(RUN):]}`, for this run only." if k.startswith(RUN)
                            and f"unlearn.{k[len(RUN):]}" in keys else m)) for k, t, d, m in rows]
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {_cell(t)} | {f'`{_cell(d)}`' if d else ''} | {_cell(m)} |" for k, t, d, m in rows]
    return "\n".join(lines) + "\n"


def _test_module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reliability() -> str:
    bad = _test_module("test_bad_inputs").CASES
    lines = ["", f"`tests/test_bad_inputs.py` ({len(bad)} cases, each run as a `clueflow` process):", "",
             "| case | the one line names |", "|---|---|"]
    lines += [f"| {case} | {', '.join(f'`{f}`' for f in fragments)} |" for case, _, fragments in bad]
    return _test_module("test_hostile_inputs").cases_table() + "\n".join(lines) + "\n"


BLOCKS = {"configuration.md": {"config-keys": configuration}, "reliability.md": {"hostile-inputs": reliability}}


def _replace(text: str, name: str, body: str, page: str) -> str:
    pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end: {name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"docs/{page}: no generated block {name!r}")
    return pattern.sub(lambda m: m[1] + body + m[2], text)


def rulegraph() -> str:
    """The rule graph of the default config, as snakemake prints it (rules, not jobs: the same for every config
    that lists the same reports)."""
    snakemake = Path(sys.executable).with_name("snakemake")
    out = subprocess.run([str(snakemake), "all", "--rulegraph", "--forceall", "--nolock"], cwd=REPO, check=True,
                         capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"}).stdout
    lines = out[out.index("digraph"):].rstrip().split("\n")
    edges = sorted(line for line in lines if "->" in line)  # snakemake prints them in set order
    return "\n".join([*(line for line in lines[:-1] if "->" not in line), *edges, lines[-1]]) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated part is stale")
    check = parser.parse_args(argv).check
    stale = []
    for page, blocks in BLOCKS.items():
        path = DOCS / page
        text = new = path.read_text()
        for name, make in blocks.items():
            new = _replace(new, name, make(), page)
        if new != text:
            stale.append(f"docs/{page}")
            if not check:
                path.write_text(new)
    dot = rulegraph()
    if not DOT.exists() or DOT.read_text() != dot:
        stale.append(str(DOT.relative_to(REPO)))
        if not check:
            DOT.write_text(dot)
            if shutil.which("dot") is None:
                raise SystemExit("docs/build.py: graphviz's dot is not installed: apt-get install graphviz")
            subprocess.run(["dot", "-Tsvg", "-o", str(SVG), str(DOT)], check=True)
    if check and stale:
        print("not current (run: .venv/bin/python docs/build.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
