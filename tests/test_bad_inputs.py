"""Bad inputs: each gives one line on stderr naming the file (and field where there is one), exit status 2,
and no output artifact. docs/reliability.md's table of bad-input cases is generated from this list."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from clueflow.cli import main
from clueflow.io import write_parquet
from clueflow.masks import build_masks, save_masks
from clueflow.models import load_model

CLI = [sys.executable, "-m", "clueflow.cli"]
BASE = {"seed": 0, "model": {"name": "t", "source": "tiny:llama"}, "forget": "capitals", "retain": ["ioi"],
        "datasets": {"capitals": {"generator": "capitals", "n": 10}, "ioi": {"generator": "ioi", "n": 10}}}


@pytest.fixture(scope="module")
def files(tiny_dirs, tmp_path_factory):
    """A valid config, model, data sets, circuit files, CNF and masks to corrupt one at a time."""
    root = tmp_path_factory.mktemp("bad")
    model = tiny_dirs["llama"]
    cfg = root / "config.yaml"
    cfg.write_text(yaml.safe_dump(BASE))
    for name in ("capitals", "ioi"):
        assert main(["data", "build", "--config", str(cfg), "--set", name, "--model-dir", str(model),
                     "--out", str(root / f"{name}.parquet")]) == 0
        assert main(["circuits", "build", "--data", str(root / f"{name}.parquet"), "--model-dir", str(model),
                     "--out", str(root / f"{name}.circuit.parquet"), "--summary", str(root / f"{name}.json"),
                     "--n-examples", "2", "--batch-size", "2", "--edge-fraction", "0.2"]) == 0
    assert main(["cnf", "build", "--forget", str(root / "capitals.circuit.parquet"), "--retain",
                 str(root / "ioi.circuit.parquet"), "--cnf", str(root / "f.cnf"), "--wcnf", str(root / "f.wcnf")]) == 0
    return dict(root=root, model=model, cfg=cfg)


def config_with(root: Path, edit) -> Path:
    cfg = yaml.safe_load(yaml.safe_dump(BASE))
    edit(cfg)
    path = root / "edited.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def data_with(f, edit) -> Path:
    df = pd.read_parquet(f["root"] / "capitals.parquet")
    path = f["root"] / "edited.parquet"
    write_parquet(path, edit(df))
    return path


def _drop(col):
    return lambda df: df.drop(columns=[col])


def _misalign(df):
    df = df.copy()
    df.loc[df.index[0], "corrupted_prompt"] = df["corrupted_prompt"].iloc[0] + " and more words"
    return df


def _bad_mask(f):
    m = build_masks(load_model(f["model"]), ["a0.h0"])
    name = next(iter(m))
    m[name] = torch.ones(3, 3, dtype=torch.bool)
    d = f["root"] / "badmask"
    save_masks(m, d / "forget.safetensors")
    save_masks(m, d / "conflict.safetensors")
    return d


def _corrupt_checkpoint(f):
    d = f["root"] / "corrupt_ckpt"
    d.mkdir(exist_ok=True)
    for p in Path(f["model"]).iterdir():
        if p.is_file() and not p.name.endswith(".safetensors"):
            (d / p.name).write_bytes(p.read_bytes())
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00not a header at all")
    return d


def _weights_only(f):
    d = f["root"] / "weights_only"
    d.mkdir(exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        (d / name).write_bytes((Path(f["model"]) / name).read_bytes())
    return d


def _pickle_checkpoint(f):
    d = f["root"] / "pickle_ckpt"
    d.mkdir(exist_ok=True)
    for p in Path(f["model"]).iterdir():  # everything but the safetensors weights
        if p.is_file() and not p.name.endswith(".safetensors"):
            (d / p.name).write_bytes(p.read_bytes())
    torch.save({"w": torch.zeros(1)}, d / "pytorch_model.bin")
    return d


def _write(name, text):
    def make(f):
        p = f["root"] / name
        p.write_text(text)
        return p
    return make


def _unlearn(f, cfg_edit=None, forget=None, masks=None, model=None):
    cfg = config_with(f["root"], cfg_edit or (lambda c: None))
    argv = ["unlearn", "run", "--config", str(cfg), "--run", "clue", "--model-dir", str(model or f["model"]),
            "--forget", str(forget or f["root"] / "capitals.parquet"), "--retain", str(f["root"] / "ioi.parquet"),
            "--out", str(f["root"] / "out_ckpt")]
    return argv + (["--forget-mask", str(masks / "forget.safetensors"), "--conflict-mask",
                    str(masks / "conflict.safetensors")] if masks else [])


def _filter(data, model):
    return lambda f: ["data", "filter", "--data", str(data(f)), "--model-dir", str(model(f)), "--out",
                      str(f["root"] / "out.parquet"), "--accuracy", str(f["root"] / "out.json")]


def _validate(edit):
    return lambda f: ["config", "validate", str(config_with(f["root"], edit))]


# (case, argv builder, fragments the one line must contain: file (as a name) and field / reason)
CASES = [
    ("unknown top-level key", _validate(lambda c: c.update(modle={})), ["edited.yaml", "modle: unknown key"]),
    ("mistyped nested key", _validate(lambda c: c["datasets"]["ioi"].update(generater="ioi")),
     ["edited.yaml", "datasets.ioi.generater: unknown key"]),
    ("wrong type", _validate(lambda c: c.update(seed="zero")), ["edited.yaml", "seed: 'zero' is not of type"]),
    ("float written as 1e-5", _validate(lambda c: c.update(unlearn={"lr": "1e-5"})),
     ["edited.yaml", "unlearn.lr:", "decimal point"]),
    ("retain set not defined", _validate(lambda c: c.update(retain=["nope"])), ["edited.yaml", "retain: 'nope'"]),
    ("forget set is also a retain set", _validate(lambda c: c.update(retain=["capitals"])),
     ["edited.yaml", "retain: 'capitals' is both"]),
    ("unknown circuit method", _validate(lambda c: c.update(circuits={"method": "eap_duall"})),
     ["edited.yaml", "circuits.method:"]),
    ("config file missing", lambda f: ["config", "validate", str(f["root"] / "nope.yaml")], ["nope.yaml", "does not exist"]),
    ("invalid YAML", lambda f: ["config", "validate", str(_write("broken.yaml", "seed: [0\n")(f))],
     ["broken.yaml", "invalid YAML"]),
    ("unknown generator", lambda f: ["data", "build", "--config", str(config_with(
        f["root"], lambda c: c["datasets"]["ioi"].update(generator="iio"))), "--set", "ioi", "--model-dir",
        str(f["model"]), "--out", str(f["root"] / "out.parquet")], ["edited.yaml", "datasets.ioi", "iio"]),
    ("unknown unlearning method", lambda f: _unlearn(f, lambda c: c.update(unlearn={"methods": {"clue": {
        "method": "cleu"}}})), ["edited.yaml", "unlearn.methods.clue.method", "cleu"]),
    ("unknown method option", lambda f: _unlearn(f, lambda c: c.update(unlearn={"methods": {"clue": {
        "method": "wagle", "options": {"ratoi": 0.1}}}})), ["edited.yaml", "unlearn.methods.clue.options.ratoi"]),
    ("missing data column", _filter(lambda f: data_with(f, _drop("answer")), lambda f: f["model"]),
     ["edited.parquet", "answer"]),
    ("empty data set", _filter(lambda f: data_with(f, lambda df: df.iloc[:0]), lambda f: f["model"]),
     ["edited.parquet", "data set is empty"]),
    ("non-aligned counterfactual", _filter(lambda f: data_with(f, _misalign), lambda f: f["model"]),
     ["edited.parquet", "corrupted_prompt"]),
    ("data file is not parquet", _filter(_write("junk.parquet", "not parquet"), lambda f: f["model"]),
     ["junk.parquet"]),
    ("missing model path", _filter(lambda f: f["root"] / "capitals.parquet", lambda f: f["root"] / "no_model"),
     ["no_model"]),
    ("corrupted safetensors weights", _filter(lambda f: f["root"] / "capitals.parquet", _corrupt_checkpoint),
     ["corrupt_ckpt", "cannot load weights"]),
    ("pickle-only checkpoint", _filter(lambda f: f["root"] / "capitals.parquet", _pickle_checkpoint),
     ["pickle_ckpt", "pickle"]),
    ("corrupted GGUF", lambda f: ["model", "materialize", "--source", str(_write("bad.gguf", "GGUFjunk")(f)),
                                  "--out", str(f["root"] / "out_model")], ["bad.gguf", "model.source"]),
    ("checkpoint without tokenizer", _filter(lambda f: f["root"] / "capitals.parquet", _weights_only),
     ["weights_only", "tokenizer"]),
    ("truncated DIMACS", lambda f: ["cnf", "summary", str(_write(
        "trunc.cnf", (f["root"] / "f.cnf").read_text()[: len((f["root"] / "f.cnf").read_text()) // 2])(f))],
     ["trunc.cnf"]),
    ("malformed DIMACS clause", lambda f: ["cnf", "summary", str(_write(
        "bad.cnf", (f["root"] / "f.cnf").read_text() + "1 x 0\n")(f))], ["bad.cnf"]),
    ("mask shape does not match the model", lambda f: _unlearn(f, masks=_bad_mask(f)),
     ["forget.safetensors", "shape"]),
    ("mask file is not safetensors", lambda f: ["masks", "summary", str(_write("bad.safetensors", "nope")(f))],
     ["bad.safetensors", "safetensors"]),
    ("forget set without train rows", lambda f: _unlearn(
        f, forget=data_with(f, lambda df: df[df["split"] != "train"])), ["edited.parquet", "split", "train"]),
]


@pytest.mark.parametrize("case, argv, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_file_and_field(files, case, argv, fragments):
    before = {p for p in files["root"].rglob("*")}
    proc = subprocess.run([*CLI, *map(str, argv(files))], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith("clueflow: ")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    created = {p for p in files["root"].rglob("*")} - before
    outputs = {p for p in created if p.name.startswith("out") or ".tmp-" in p.name}
    assert not outputs, outputs  # no partial artifact


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20
