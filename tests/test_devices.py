"""Every model stage on an explicit device and dtype (the ``device`` × ``dtype`` fixtures: the CPU, and CUDA where
present, × fp32/bf16), checked against the fp32 CPU reference; and the one place that decides the device.

Tolerances. bf16 keeps 8 significant bits (relative rounding 2⁻⁹ per stored value); a stage's continuous outputs
(log-likelihoods, MIA scores, attribution scores, logit differences) pass through a few such roundings, so they
must agree with fp32 to within a few bf16 steps: relative error ≤ 2⁻⁶ (≈ 4 steps of 2⁻⁸). fp32 on another device
only reorders sums: relative error ≤ 1e-4. Discrete outputs (argmax correctness, a top-k circuit or WANDA mask,
a greedy token) can only flip where the reference's own margin is inside that error: on a random tiny model, whose
logits are nearly tied, at most 10 % of them in bf16 and 3 % in fp32.
"""

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import clueflow.masks as mask_stage
from clueflow import devices
from clueflow.circuits import discover
from clueflow.cli import main
from clueflow.data import filter as data_filter
from clueflow.data.build import write_set
from clueflow.devices import resolve_device
from clueflow.errors import ClueflowError
from clueflow.evaluate import run as evaluate_run
from clueflow.masks import load_masks, run_masks
from clueflow.models import DTYPES, load_model, load_tokenizer, save_checkpoint
from clueflow.scoring import encode_continuation, score_continuations

REFERENCE = dict(device="cpu", dtype="float32")


def rtol(dtype: str) -> float:
    return 2**-6 if dtype == "bfloat16" else 1e-4


def min_agreement(dtype: str) -> float:
    return 0.9 if dtype == "bfloat16" else 0.97


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


@pytest.fixture
def loaded(monkeypatch):
    """Records the (dtype, device type) of every model a stage module loads: ``spy(module)`` wraps its
    ``load_model``."""
    seen = []

    def spy(module):
        real = module.load_model

        def load(*args, **kwargs):
            model = real(*args, **kwargs)
            p = next(model.parameters())
            seen.append((p.dtype, p.device.type))
            return model

        monkeypatch.setattr(module, "load_model", load)

    return seen, spy


def on(device: str, dtype: str) -> tuple[torch.dtype, str]:
    return DTYPES[dtype], torch.device(device).type


@pytest.fixture(scope="module")
def sets(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("device_sets")
    tok = load_tokenizer(tiny_dirs["llama"])
    specs = {"capitals": {"generator": "capitals", "n": 30}, "sentiment": {"generator": "sentiment", "n": 24},
             "ioi": {"generator": "ioi", "n": 8, "splits": {"circuit": 1.0, "train": 0.0}}}
    for name, spec in specs.items():
        write_set(name, spec, tok, root / f"{name}.parquet", seed=0)
    return {name: root / f"{name}.parquet" for name in specs}


# ---- the one place that decides the device ---------------------------------------------------------------


def test_auto_is_the_cpu_without_a_gpu_and_cuda_with_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")  # a resolved device passes through


def test_a_gpu_the_process_does_not_see_is_one_line_naming_model_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ClueflowError) as err:
        resolve_device("cuda")
    assert "model.device" in str(err.value) and "no CUDA GPU" in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ClueflowError, match=r"model\.device.*'cuda:1'.*1 GPU"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("spec", ["gpu", "CUDA", "cuda:", "cuda:x", "mps", "", 0])
def test_a_device_that_is_not_auto_cpu_cuda_or_cuda_n_is_refused(spec):
    with pytest.raises(ClueflowError, match=r"model\.device: unknown device"):
        resolve_device(spec)


def test_config_validate_refuses_model_device_gpu_in_one_line(tmp_path, capsys):
    cfg = {"seed": 0, "model": {"name": "t", "source": "tiny:llama", "device": "gpu"}, "forget": "capitals",
           "retain": ["ioi"], "datasets": {"capitals": {"generator": "capitals", "n": 6},
                                           "ioi": {"generator": "ioi", "n": 6}}}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["config", "validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"clueflow: {config}: model.device: ") and "'gpu'" in err
    cfg["model"]["device"] = "cuda:1"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["config", "validate", str(config)]) == 0  # valid where the job runs on a node with two GPUs


def test_cli_refuses_a_bad_device_flag_before_any_work(tiny_dirs, sets, tmp_path, capsys):
    out = tmp_path / "f.parquet"
    with pytest.raises(SystemExit) as exit_:
        main(["data", "filter", "--data", str(sets["sentiment"]), "--model-dir", str(tiny_dirs["llama"]),
              "--out", str(out), "--accuracy", str(tmp_path / "a.json"), "--device", "gpu"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "--device" in err and not out.exists()


# ---- filter and scoring ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_scores(tiny_dirs, sets):
    tok = load_tokenizer(tiny_dirs["llama"])
    df = pd.concat([pd.read_parquet(sets[n]) for n in ("capitals", "sentiment")], ignore_index=True)
    requests = [(p, a) for p, a in zip(df["prompt"], df["answer"])]
    return requests, score_continuations(load_model(tiny_dirs["llama"], **REFERENCE), tok, requests, batch_size=8)


def test_scoring_on_device_and_dtype_matches_the_fp32_cpu_reference(tiny_dirs, reference_scores, device, dtype):
    tok = load_tokenizer(tiny_dirs["llama"])
    requests, ref = reference_scores
    got = score_continuations(load_model(tiny_dirs["llama"], device=device, dtype=dtype), tok, requests,
                              batch_size=8)
    np.testing.assert_allclose([s.logprob for s in got], [s.logprob for s in ref], rtol=rtol(dtype))
    assert [s.n_tokens for s in got] == [s.n_tokens for s in ref]
    assert np.mean([a.greedy == b.greedy for a, b in zip(got, ref)]) >= min_agreement(dtype)


def _filtered(tiny_dirs, sets, root, **where):
    """The ids the filter keeps, and its accuracy records."""
    records = data_filter.run_filter(sets["sentiment"], tiny_dirs["llama"], root / "f.parquet", root / "f.json",
                                     keep="clean", batch_size=8, **where)
    return set(pd.read_parquet(root / "f.parquet")["id"]), records


@pytest.fixture(scope="module")
def reference_filter(tiny_dirs, sets, tmp_path_factory):
    return _filtered(tiny_dirs, sets, tmp_path_factory.mktemp("device_filter"), **REFERENCE)


def test_filter_on_device_and_dtype_keeps_what_the_fp32_cpu_reference_keeps(tiny_dirs, sets, reference_filter,
                                                                             tmp_path, device, dtype, loaded):
    seen, spy = loaded
    spy(data_filter)
    ref_ids, ref_records = reference_filter
    ids, records = _filtered(tiny_dirs, sets, tmp_path, device=device, dtype=dtype)
    assert seen == [on(device, dtype)]
    n = ref_records[0]["n"]
    assert len(ids ^ ref_ids) <= (1 - min_agreement(dtype)) * n
    for got, ref in zip(records, ref_records):
        assert got["format"] == ref["format"] and got["n"] == ref["n"]
        assert abs(got["accuracy"] - ref["accuracy"]) <= 1 - min_agreement(dtype)


# ---- circuit discovery and re-selection ------------------------------------------------------------------


CIRCUIT = dict(edge_fraction=0.2, n_examples=4, batch_size=4)


@pytest.fixture(scope="module")
def reference_circuit(tiny_dirs, sets, tmp_path_factory):
    """The fp32 CPU circuit files and summary, and the scale of the logits its metrics are differences of."""
    root = tmp_path_factory.mktemp("device_circuit")
    summary = discover.run_circuit(sets["ioi"], tiny_dirs["llama"], root / "c.parquet", root / "c.json",
                                   **CIRCUIT, **REFERENCE)
    tok, model = load_tokenizer(tiny_dirs["llama"]), load_model(tiny_dirs["llama"], **REFERENCE)
    batch = discover.make_batches(pd.read_parquet(sets["ioi"]), tok, 8)[0]
    with torch.no_grad():
        scale = model(**batch.inputs("clean")).logits.abs().max().item()
    return root / "c.parquet", pd.read_parquet(root / "c.parquet"), summary, scale


def _faithfulness_matches(got: dict, ref: dict, dtype: str, scale: float) -> None:
    """Each metric is a difference of two logits: it errs by a few roundings of the logits, not of itself."""
    for direction in ("noising", "denoising"):
        g, r = got[direction]["faithfulness"], ref[direction]["faithfulness"]
        for key in ("metric_full", "metric_other", "metric_circuit"):
            assert abs(g[key] - r[key]) <= rtol(dtype) * scale, (direction, key)


def test_circuit_discovery_on_device_and_dtype_matches_the_fp32_cpu_reference(tiny_dirs, sets, reference_circuit,
                                                                              tmp_path, device, dtype, loaded):
    seen, spy = loaded
    spy(discover)
    _, ref, ref_summary, scale = reference_circuit
    summary = discover.run_circuit(sets["ioi"], tiny_dirs["llama"], tmp_path / "c.parquet", tmp_path / "c.json",
                                   **CIRCUIT, device=device, dtype=dtype)
    assert seen == [on(device, dtype)]
    got = pd.read_parquet(tmp_path / "c.parquet")
    assert got[["src", "dst"]].equals(ref[["src", "dst"]])
    for direction in ("noising", "denoising"):
        assert rel_l2(ref[f"score_{direction}"], got[f"score_{direction}"]) <= 4 * rtol(dtype)
        if dtype == "float32":  # in bf16, which of a random model's near-tied edges make the cut may change
            assert summary[direction]["edges"] == ref_summary[direction]["edges"]
            a, b = ref[f"in_{direction}"], got[f"in_{direction}"]
            assert (a & b).sum() / (a | b).sum() >= min_agreement(dtype)
    _faithfulness_matches(summary, ref_summary, dtype, scale)


def test_circuit_reselection_on_device_and_dtype_matches_the_fp32_cpu_reference(tiny_dirs, sets, reference_circuit,
                                                                                tmp_path, device, dtype, loaded):
    seen, spy = loaded
    spy(discover)
    path, ref, ref_summary, scale = reference_circuit
    summary = discover.resize_circuit(path, sets["ioi"], tiny_dirs["llama"], tmp_path / "r.parquet",
                                      tmp_path / "r.json", edge_fraction=CIRCUIT["edge_fraction"],
                                      batch_size=CIRCUIT["batch_size"], device=device, dtype=dtype)
    assert seen == [on(device, dtype)]
    # the same stored scores select the same circuits on any device; only faithfulness is recomputed
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "r.parquet"), ref)
    _faithfulness_matches(summary, ref_summary, dtype, scale)


# ---- WANDA masks -----------------------------------------------------------------------------------------


def test_wanda_masks_on_device_and_dtype_match_the_fp32_cpu_reference(tiny_dirs, sets, tmp_path, device, dtype,
                                                                      loaded):
    seen, spy = loaded
    assignment = tmp_path / "assignment.parquet"
    writers = [*(f"a{layer}.h{h}" for layer in range(2) for h in range(4)), "m0", "m1", "input"]
    pd.DataFrame({"node": writers, "category": ["forget", "conflict", *["safe"] * 9]}).to_parquet(assignment)

    def masks(tag, **where):
        paths = [tmp_path / f"{tag}.{kind}.safetensors" for kind in ("forget", "conflict")]
        run_masks(assignment, tiny_dirs["llama"], *paths, tmp_path / f"{tag}.json", base="wanda", wanda_ratio=0.2,
                  calibration=sets["capitals"], n_calibration=8, **where)
        return [load_masks(p) for p in paths]

    ref = masks("ref", **REFERENCE)
    spy(mask_stage)
    got = masks("run", device=device, dtype=dtype)
    assert seen == [on(device, dtype)]
    for g, r in zip(got, ref):
        assert g.keys() == r.keys()
        for name in r:
            assert g[name].dtype == torch.bool and g[name].device.type == "cpu"  # files are device-free
            overlap = (g[name] & r[name]).sum() / r[name].sum()
            assert overlap >= min_agreement(dtype), name


def test_masks_without_a_base_never_need_the_accelerator(tiny_dirs, tmp_path, loaded, monkeypatch):
    seen, spy = loaded
    assignment = tmp_path / "assignment.parquet"
    writers = [*(f"a{layer}.h{h}" for layer in range(2) for h in range(4)), "m0", "m1", "input"]
    pd.DataFrame({"node": writers, "category": ["forget", *["safe"] * 10]}).to_parquet(assignment)
    spy(mask_stage)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU node, with model.device: cuda
    run_masks(assignment, tiny_dirs["llama"], tmp_path / "f.safetensors", tmp_path / "c.safetensors",
              tmp_path / "s.json", base="none", device="cuda", dtype="bfloat16")
    assert seen == [(torch.bfloat16, "cpu")]
    assert load_masks(tmp_path / "f.safetensors")["model.layers.0.self_attn.q_proj.weight"][:8].all()


# ---- evaluation ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def changed_checkpoint(tiny_dirs, tmp_path_factory):
    """The tiny llama with one maskable matrix halved: every nonzero entry differs from the base in any dtype."""
    ckpt = tmp_path_factory.mktemp("device_eval") / "ckpt"
    model = load_model(tiny_dirs["llama"], **REFERENCE)
    with torch.no_grad():
        model.get_parameter("model.layers.1.mlp.down_proj.weight").mul_(0.5)
    save_checkpoint(model, load_tokenizer(tiny_dirs["llama"]), ckpt)
    return ckpt


@pytest.fixture(scope="module")
def reference_evaluation(tiny_dirs, sets, changed_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("device_eval_ref")
    return _evaluate(tiny_dirs, sets, changed_checkpoint, root, **REFERENCE)


def _evaluate(tiny_dirs, sets, ckpt, root, **where):
    summary = evaluate_run.evaluate_model(ckpt, tiny_dirs["llama"], sets["capitals"], [sets["sentiment"]], {},
                                          root / "e.parquet", root / "e.json", run="test", forget_ratio=6,
                                          batch_size=8, max_new_tokens=3, **where)
    return pd.read_parquet(root / "e.parquet"), summary


def test_evaluation_on_device_and_dtype_matches_the_fp32_cpu_reference(tiny_dirs, sets, changed_checkpoint,
                                                                       reference_evaluation, tmp_path, device,
                                                                       dtype, loaded):
    seen, spy = loaded
    spy(evaluate_run)
    ref, ref_summary = reference_evaluation
    got, summary = _evaluate(tiny_dirs, sets, changed_checkpoint, tmp_path, device=device, dtype=dtype)
    # the evaluated model on the device; the base model, read only for the changed share, is never loaded: its
    # tensors are read one at a time from its files
    assert seen == [on(device, dtype)]
    assert got[["subset", "set", "id"]].equals(ref[["subset", "set", "id"]])
    assert (got["correct"] == ref["correct"]).mean() >= min_agreement(dtype)
    forget = ref["subset"].str.startswith("forget")
    for key in ("loss", "min_k", "min_k_pp"):  # MIA scores; min_k_pp is standardized: bound by its scale
        scale = ref.loc[forget, key].abs().max()
        assert (got.loc[forget, key] - ref.loc[forget, key]).abs().max() <= rtol(dtype) * scale, key
    # greedy generation (Rouge-L's input): the first generated token is an argmax of the same logits
    tok = load_tokenizer(tiny_dirs["llama"])
    rows = ref["subset"] == "forget"

    def first(texts):
        return [encode_continuation(tok, t)[:1] for t in texts]

    assert np.mean([a == b for a, b in zip(first(got.loc[rows, "generation"]), first(ref.loc[rows, "generation"]))]) \
        >= min_agreement(dtype)
    # exactly the halved matrix differs, whatever the dtype: 1 of the model's 14 maskable matrices
    assert summary["unlearned_parameter"] == ref_summary["unlearned_parameter"] == pytest.approx(1 / 14)


def test_unlearned_parameter_compares_a_model_with_a_base_on_another_device(tiny_dirs, changed_checkpoint, device,
                                                                            dtype):
    model = load_model(changed_checkpoint, device=device, dtype=dtype)
    base = load_model(tiny_dirs["llama"], device="cpu", dtype=dtype)
    assert evaluate_run.unlearned_parameter(model, base) == pytest.approx(1 / 14)
    assert evaluate_run.unlearned_parameter(base, base) == 0.0


def test_model_device_is_where_the_parameters_are(tiny_dirs, device):
    assert devices.model_device(load_model(tiny_dirs["gpt2"], device=device)).type == torch.device(device).type
