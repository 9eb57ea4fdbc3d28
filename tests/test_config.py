import copy
from pathlib import Path

import pytest
import yaml

from clueflow.config import read_config, validate_config
from clueflow.errors import ClueflowError

REPO = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_valid_and_gets_defaults():
    cfg = validate_config(copy.deepcopy(DEFAULT), file="config.yaml")
    assert cfg["model"]["revision"] is None  # filled from the schema default
    assert cfg["forget"] == "capitals" and cfg["retain"] == ["bool"]


def _broken(edit):
    cfg = copy.deepcopy(DEFAULT)
    edit(cfg)
    with pytest.raises(ClueflowError) as err:
        validate_config(cfg, file="my.yaml")
    assert str(err.value).startswith("my.yaml: ") and "\n" not in str(err.value)
    return err.value


@pytest.mark.parametrize("edit, field, needle", [
    (lambda c: c.update(sed=1), "sed", "unknown key"),
    (lambda c: c["model"].update(sourse="x"), "model.sourse", "unknown key"),
    (lambda c: c["datasets"]["bool"].update(nn=3), "datasets.bool.nn", "unknown key"),
    (lambda c: c["filter"].update(kep="all"), "filter.kep", "unknown key"),
    (lambda c: c.update(seed="zero"), "seed", "not of type 'integer'"),
    (lambda c: c["datasets"]["bool"].update(n=0), "datasets.bool.n", "minimum"),
    (lambda c: c["datasets"]["bool"].update(loader="sst2"), "datasets.bool", "exactly one of"),
    (lambda c: c["model"].update(dtype="fp8"), "model.dtype", "fp8"),
    (lambda c: c.update(forget="nope"), "forget", "not a key of datasets"),
    (lambda c: c.update(retain=["bool", "capitals"]), "retain", "both the forget set and a retain set"),
    (lambda c: c["datasets"]["bool"].update(splits={"circuit": 0.8, "train": 0.5}), "datasets.bool.splits", "sum"),
    (lambda c: c.pop("model"), "<top level>", "'model' is a required property"),
])
def test_config_errors_name_the_key(edit, field, needle):
    err = _broken(edit)
    assert err.field == field and needle in str(err)


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ClueflowError, match="does not exist"):
        read_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ClueflowError, match="invalid YAML") as err:
        read_config(bad)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize("spec, field, needle", [
    ({"generator": "capitalz", "n": 3}, "datasets.x.generator", "unknown generator 'capitalz'"),
    ({"loader": "wmdb", "n": 3}, "datasets.x.loader", "unknown loader 'wmdb'"),
    ({"generator": "capitals", "n": 3, "options": {"form": ["mc"]}}, "datasets.x.options.form", "forms"),
    ({"generator": "ioi", "n": 3, "options": {"length": 3}}, "datasets.x.options.length", "allowed: none"),
    ({"loader": "sst2", "n": 3, "options": {"pth": "a.parquet"}}, "datasets.x.options.pth", "path, hub"),
])
def test_unknown_generator_loader_or_option_is_rejected(spec, field, needle):
    from clueflow.data.build import check_spec

    with pytest.raises(ClueflowError, match=needle) as err:
        check_spec("x", spec, file="my.yaml")
    assert err.value.field == field and str(err.value).startswith(f"my.yaml: {field}: ")


def test_optional_sections_get_their_defaults():
    cfg = copy.deepcopy(DEFAULT)
    del cfg["filter"], cfg["circuits"]
    validate_config(cfg)
    assert cfg["filter"] == {"keep": "clean", "batch_size": 32}
    assert cfg["circuits"] == {"method": "eap_dual", "edge_fraction": 0.05, "node_fraction": 1,
                               "selection": "edges", "mlp_blocks": 1,
                               "n_examples": 32,
                               "batch_size": 8,
                               "max_length": 512, "batch_tokens": 4096, "ig_steps": 5, "edge_pruning": {"steps": 100, "lr": 0.1, "lambda_lr": 0.01,
                                                               "warmup": 0.5}}


def test_method_options_resolve_to_their_modes_defaults_and_exclusive_options_are_refused():
    from clueflow.plan import Plan
    from clueflow.registry import Registry
    from clueflow.unlearn.methods import METHODS, method_impl

    assert METHODS.resolve("depn", {}) == dict(mode="paper", threshold=0.1, top=0.05, steps=8, ig="joint")
    assert METHODS.resolve("depn", {"mode": "published", "steps": 4}) == dict(
        mode="published", threshold=0.1, neurons=20, steps=4, ig="per_layer")
    # giving one of an exclusive group drops the mode's default for the other
    assert METHODS.resolve("depn", {"mode": "published", "top": 0.01})["top"] == 0.01
    assert "neurons" not in METHODS.resolve("depn", {"mode": "published", "top": 0.01})
    assert "top" not in METHODS.resolve("depn", {"neurons": 5})
    assert METHODS.resolve("simu", {"mode": "paper"})["optimizer"] == "adamw"
    assert METHODS.resolve("simu", {})["loss"] == "ga" and "loss" not in METHODS.resolve("simu", {"mode": "paper"})
    assert METHODS.resolve("ga", {}) == {}
    cfg = copy.deepcopy(DEFAULT)
    cfg["unlearn"]["methods"]["depn"] = {"options": {"top": 0.1, "neurons": 3}}
    with pytest.raises(ClueflowError, match=r"unlearn.methods.depn.options.neurons: give one of top, neurons"):
        Plan.from_config(cfg, file="c.yaml")
    with pytest.raises(ClueflowError, match="unlearn.methods.r.options.spread"):
        method_impl("random", {"spread": "layer"}, "r")
    with pytest.raises(ValueError, match="default top='x' is not a valid option value"):
        Registry("thing").register("t", options={"top": float}, defaults={"top": "x"})


def test_the_fast_yaml_parser_reads_the_schema_as_the_safe_loader_does():
    import yaml

    from clueflow.config import schema, schema_text

    assert schema() == yaml.safe_load(schema_text())
    edited = schema()
    edited["properties"].clear()  # a caller's edit does not reach the next reader
    assert schema()["properties"]
