"""The docs cannot rot: generated parts are current, checked shell blocks run, every config key and artifact path
they name exists, every relative link resolves, and the README stays a front page."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from clueflow.config import schema
from clueflow.layout import AFTER, BASE, RESIZED, Layout

REPO = Path(__file__).resolve().parents[1]
PAGES = ["configuration", "artifacts", "methods", "stages", "results", "cluster", "reliability", "development"]
DOCS = [REPO / "README.md", *(REPO / "docs" / f"{p}.md" for p in PAGES)]
FILE_SUFFIX = re.compile(r"\.(safetensors|json|ya?ml|parquet|md|png|svg|dot|py|gguf|cnf|wcnf|csv|txt|log|smk)$")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _spans(path: Path) -> list[str]:
    """Inline code spans outside fenced blocks and outside the table of refused inputs (bad keys on purpose)."""
    prose = re.sub(r"```.*?```|<!-- generated: hostile-inputs -->.*?<!-- end: hostile-inputs -->", "", _text(path),
                   flags=re.S)
    return re.findall(r"`([^`\n]+)`", prose)


def test_every_page_exists_and_the_readme_is_a_front_page():
    missing = [str(p.relative_to(REPO)) for p in DOCS if not p.exists()]
    assert not missing, missing
    readme = _text(REPO / "README.md")
    assert len(readme.splitlines()) <= 200
    for page in PAGES:
        assert f"docs/{page}.md" in readme, f"README does not link docs/{page}.md"


def test_generated_parts_are_current():
    proc = subprocess.run([sys.executable, str(REPO / "docs" / "build.py"), "--check"], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def _checked_commands() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        for block in re.findall(r"```bash checked\n(.*?)```", _text(path), flags=re.S):
            out += [(path.name, line) for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return out


def test_the_docs_mark_commands_as_checked():
    assert len(_checked_commands()) >= 5


@pytest.mark.parametrize("page, command", _checked_commands(), ids=[c for _, c in _checked_commands()])
def test_checked_command_runs(page, command):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(command, shell=True, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"{page}: {command}\n{proc.stdout[-1000:]}{proc.stderr[-2000:]}"


def _key_exists(dotted: str) -> bool:
    node = schema()
    for part in dotted.split("."):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        if part in props:
            node = props[part]
        elif isinstance(extra, dict):  # a named entry: a data set, a run, a task
            node = extra
        elif "properties" not in node and extra is not False:  # free-form options
            return True
        else:
            return False
    return True


def _named_keys(path: Path) -> list[str]:
    top = set(schema()["properties"])
    keys = []
    for span in _spans(path):
        token = re.split(r"[\s:=]", span.strip(), maxsplit=1)[0]
        if token.split(".")[0] in top and "." in token and not FILE_SUFFIX.search(token) \
                and re.fullmatch(r"[a-z_0-9]+(\.(<\w+>|[A-Za-z_0-9]+))+", token):
            keys.append(token)
    return keys


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_config_key_the_docs_name_is_in_the_schema(path):
    unknown = [k for k in _named_keys(path) if not _key_exists(k)]
    assert not unknown, f"{path.name}: not in the config schema: {unknown}"


def test_the_key_check_catches_a_misspelled_key():
    assert _key_exists("unlearn.lr_grid") and _key_exists("datasets.<name>.validation")
    assert _key_exists("unlearn.methods.clue.options.ratio") and _key_exists("evaluate.metrics.arc_easy")
    assert not _key_exists("unlearn.lr_grids") and not _key_exists("circuits.edge_fractoin")


def _templates() -> list[str]:
    layout = Layout()
    out = []
    for name in dir(layout):
        method = getattr(layout, name)
        if name.startswith("_") or name in ("fill", "log") or not callable(method):
            continue
        families = (BASE, RESIZED, AFTER) if "family" in method.__code__.co_varnames else (None,)
        out += [method() if f is None else method(f) for f in families]
    return out


def _pattern(template: str) -> re.Pattern:
    """A layout template as a regex that also matches its ancestor directories and paths inside it."""
    parts = template.split("/")
    field = lambda s: re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(s))  # noqa: E731
    body = "/".join(field(p) for p in parts)
    prefixes = ["/".join(field(p) for p in parts[:i]) for i in range(1, len(parts))]
    return re.compile("|".join(f"(?:{p})/" for p in prefixes) + f"|(?:{body})(?:/.*)?")


def _expand(path: str) -> list[str]:
    """A docs path with its {a,b} alternatives expanded and its placeholders given sample values."""
    m = re.search(r"\{([^{}]*,[^{}]*)\}", path)
    if m:
        return [x for alt in m[1].split(",") for x in _expand(path[:m.start()] + alt + path[m.end():])]
    return [re.sub(r"[{<](\w+)[}>]", lambda f: "f__r" if f[1] == "pair" else "x1", path)]


def _named_paths(path: Path) -> list[str]:
    return [s.split()[0] for s in _spans(path) if s.startswith("results/")]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_artifact_path_the_docs_name_is_one_the_layout_produces(path):
    patterns = [_pattern(t) for t in _templates()]
    unknown = [p for p in _named_paths(path) for x in _expand(p.rstrip(","))
               if not any(pat.fullmatch(x) for pat in patterns)]
    assert not unknown, f"{path.name}: not a path clueflow.layout produces: {unknown}"


def test_the_path_check_catches_a_path_no_rule_writes():
    patterns = [_pattern(t) for t in _templates()]
    ok = lambda p: all(any(pat.fullmatch(x) for pat in patterns) for x in _expand(p))  # noqa: E731
    assert ok("results/masks/{model}/{forget}__{retains}/{forget,conflict}.safetensors")
    assert ok("results/checkpoints/{model}/{run}/seed{seed}/{pair}/") and ok("results/models/")
    assert not ok("results/mask/{model}/{pair}/forget.safetensors") and not ok("results/eval/{model}/x.parquet")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _broken_links(path: Path) -> list[str]:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _text(path)):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md":
            anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", _text(dest), flags=re.M)}
            broken += [target] if anchor not in anchors else []
    return broken


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(path):
    assert not _broken_links(path), f"{path.name}: {_broken_links(path)}"


def test_the_link_check_catches_a_missing_page_and_anchor(tmp_path):
    (tmp_path / "b.md").write_text("# The stress pair (`a.yaml`: measured)\n")
    (tmp_path / "a.md").write_text("[ok](b.md#the-stress-pair-ayaml-measured) [no](c.md) [bad](b.md#stress) "
                                   "[web](https://x.org)\n")
    assert _broken_links(tmp_path / "a.md") == ["c.md", "b.md#stress"]
