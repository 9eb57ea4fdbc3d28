"""The multi-process unlearning route (unlearn.gpus > 1) on the CPU: two torchrun processes (gloo), each training on
half of every global batch, give one process's weights up to fp32 round-off, and only the first process writes the
checkpoint. Full-parameter runs go through DDP (accelerate); masked runs through FSDP2, each process holding and
updating its rows of every weight and mask, and every entry outside the masks stays bit-identical."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from clueflow.data.build import write_set
from clueflow.errors import ClueflowError
from clueflow.models import load_tokenizer
from clueflow.plan import Plan
from clueflow.resources import job_resources
from clueflow.unlearn.run import launch, run_unlearn

# NPO without a retain term: a mean over sequences, so two shares weighted by their rows give the batch's mean
# (7 rows in batches of 4: 2+2, then 2+1)
SETTINGS = dict(forget_ratio=7, batch_size=4, attribution_batch_size=4, max_length=32, lr=3e-3, epochs=2,
                loss="npo", retain_weight=0.0, weight_decay=0.1, npo_beta=0.1, grad_clip=1.0,
                gradient_checkpointing=False, joint_retain_pass=False, lora=None, steps=None, lr_grid=None)


@pytest.fixture(scope="module")
def setup(tiny_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("unlearn_ddp")
    tok = load_tokenizer(tiny_dirs["llama"])
    write_set("capitals", {"generator": "capitals", "n": 40}, tok, root / "capitals.parquet", seed=0)
    write_set("sentiment", {"generator": "sentiment", "n": 8}, tok, root / "sentiment.parquet", seed=0)
    return dict(model_dir=str(tiny_dirs["llama"]), forget_path=str(root / "capitals.parquet"),
                retain_paths=[str(root / "sentiment.parquet")], run="npo", method="npo", options={},
                settings=SETTINGS, device="cpu", dtype="float32"), root


@pytest.mark.parametrize("lora", [None, dict(r=4, alpha=8, dropout=0.0, target_modules="all-linear")])
def test_two_processes_train_the_same_weights_as_one_and_write_one_checkpoint(setup, lora):
    kwargs, root = setup
    kwargs, root = dict(kwargs, settings={**SETTINGS, "lora": lora}), root / str(lora is None)
    one = run_unlearn(**kwargs, out_dir=root / "one" / "ckpt")
    two = launch(2, **kwargs, out_dir=str(root / "two" / "ckpt"))
    assert sorted(p.name for p in (root / "two").iterdir()) == ["ckpt"]  # no second or partial directory
    a, b = (load_file(root / d / "ckpt" / "model.safetensors") for d in ("one", "two"))
    assert a.keys() == b.keys()
    moved = 0
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
        moved += not torch.equal(a[name], load_file(Path(kwargs["model_dir"]) / "model.safetensors")[name])
    assert moved > 0
    logs = [pd.read_parquet(root / d / "ckpt" / "train_log.parquet") for d in ("one", "two")]
    assert len(logs[0]) == len(logs[1]) == SETTINGS["epochs"] * 2  # same number of global steps
    for col in ("loss", "forget_loss", "grad_norm"):  # losses averaged over the processes: the batch's
        torch.testing.assert_close(torch.tensor(logs[1][col].to_numpy()), torch.tensor(logs[0][col].to_numpy()),
                                   rtol=1e-4, atol=1e-5)
    assert one["n_forget"] == two["n_forget"] == 7
    assert one["stages"] == two["stages"]  # the merged adapter's description too


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_masked_run_under_fsdp2_moves_only_masked_entries_and_matches_one_process(setup, tiny_dirs, dtype):
    """CLUE's two masked stages (PO, then PO + retain NLL) in two FSDP2 processes: the checkpoint, gathered to rank 0,
    equals the one-process run's within round-off (bf16: within a quarter of the largest update), every entry outside
    both masks is bit-identical to the base model, and entries inside them moved."""
    from clueflow.circuits.graph import build_graph
    from clueflow.masks import build_masks, save_masks
    from clueflow.models import load_model

    kwargs, root = setup
    root = root / f"fsdp_{dtype}"
    base = load_model(kwargs["model_dir"])
    graph = build_graph(base)
    layers = len(graph.layers)
    nodes = {"forget": [f"a{l}.h0" for l in range(layers)] + ["m0"], "conflict": [f"a{l}.h1" for l in range(layers)]}
    masks = {}
    for kind, chosen in nodes.items():
        save_masks(build_masks(base, chosen, graph=graph), root / f"{kind}.safetensors")
        masks[kind] = str(root / f"{kind}.safetensors")
    kwargs = dict(kwargs, run="clue", method="clue", masks=masks, dtype=dtype,
                  settings={**SETTINGS, "loss": "po", "retain_weight": 1.0, "epochs": 1})
    one = run_unlearn(**kwargs, out_dir=root / "one" / "ckpt")
    two = launch(2, **kwargs, out_dir=str(root / "two" / "ckpt"))
    assert sorted(p.name for p in (root / "two").iterdir()) == ["ckpt"]
    a, b = (load_file(root / d / "ckpt" / "model.safetensors") for d in ("one", "two"))
    start = load_model(kwargs["model_dir"], dtype=dtype).state_dict()
    union = {}
    for kind in masks:
        for k, m in load_file(masks[kind]).items():
            union[k] = union.get(k, torch.zeros_like(m)) | m
    assert a.keys() == b.keys()
    moved = 0
    for name in b:
        assert b[name].dtype == start[name].dtype, name
        outside = ~union[name] if name in union else torch.ones(b[name].shape, dtype=torch.bool)
        assert torch.equal(b[name][outside], start[name][outside]), name
        moved += int((b[name] != start[name]).sum())
        if dtype == "float32":
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)
        else:  # bf16 gradients summed in another order; AdamW's normalisation amplifies the near-zero ones
            update = (a[name].float() - start[name].float()).abs().max()
            assert (b[name].float() - a[name].float()).abs().max() <= 0.25 * update, name
    assert moved > 0
    logs = [pd.read_parquet(root / d / "ckpt" / "train_log.parquet") for d in ("one", "two")]
    assert list(logs[1]["stage"]) == list(logs[0]["stage"])
    tol = dict(rtol=1e-3, atol=1e-4) if dtype == "float32" else dict(rtol=3e-2, atol=1e-2)
    for col in ("loss", "grad_norm"):  # the batch's, not one process's share
        torch.testing.assert_close(torch.tensor(logs[1][col].to_numpy()), torch.tensor(logs[0][col].to_numpy()),
                                   **tol)
    assert one["stages"] == two["stages"]


def test_several_gpus_are_refused_at_config_check_for_methods_that_localize_on_the_model():
    def plan(**runs):
        cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
        for run, spec in runs.items():
            cfg["unlearn"]["methods"].setdefault(run, {}).update(spec)
        return Plan.from_config(cfg, file="my.yaml")

    plan(ga={"gpus": 2}, clue={"gpus": 2})  # DDP; FSDP2 on the given masks
    with pytest.raises(ClueflowError, match="localizes on the model in one process") as err:
        plan(wagle={"gpus": 2})
    assert err.value.field == "unlearn.methods.wagle.gpus"


def test_an_unlearning_job_asks_for_its_runs_gpus():
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    cfg["model"].update(source="meta-llama/Meta-Llama-3-8B", dtype="bfloat16", device="cuda")
    cfg["unlearn"]["methods"]["ga"]["gpus"] = 4
    cfg = Plan.from_config(cfg).config
    job = {"run": "ga", "forget": "capitals", "retains": "sentiment", "model": "m"}
    assert job_resources("unlearn", cfg, "absent", job).gpus == 4
    assert job_resources("unlearn", cfg, "absent", dict(job, run="clue")).gpus == 1
    assert job_resources("evaluate", cfg, "absent", job).gpus == 1


@pytest.mark.parametrize("nodelist, first", [("gpu[003-008,011],big1", "gpu003"), ("node7,node8", "node7"),
                                             ("a[1-2]", "a1"), ("x[07]", "x07"), ("single", "single")])
def test_the_rendezvous_host_is_the_first_of_the_slurm_node_list(nodelist, first):
    from clueflow.unlearn.run import first_host

    assert first_host(nodelist) == first


def test_several_nodes_start_one_torchrun_each_through_srun_meeting_on_the_first_node(tmp_path):
    from clueflow.unlearn.run import launch_command

    args = tmp_path / "unlearn.json"
    env = {"SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[011-012]", "SLURM_JOB_ID": "4242"}
    cmd = launch_command(16, args, env)
    assert cmd[:4] == ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    torchrun = cmd[4:]
    assert torchrun[1:3] == ["-m", "torch.distributed.run"]
    assert {"--nnodes=2", "--nproc_per_node=8", "--rdzv_backend=c10d", "--rdzv_endpoint=gpu011:29500",
            "--rdzv_id=4242"} <= set(torchrun)
    assert torchrun[-3:] == ["-m", "clueflow.unlearn.run", str(args)]
    assert "--rdzv_endpoint=gpu011:6000" in launch_command(16, args, {**env, "MASTER_PORT": "6000"})
    one = launch_command(2, args, {"SLURM_NNODES": "1", "SLURM_JOB_NODELIST": "gpu011"})  # one node: no srun
    assert one[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                       "clueflow.unlearn.run", str(args)]
    with pytest.raises(ClueflowError, match="do not split evenly") as err:
        launch_command(3, args, env)
    assert err.value.field == "unlearn.gpus"


def test_sharded_loading_and_saving_round_trip_a_checkpoint_bit_for_bit(tiny_dirs, tmp_path, monkeypatch):
    """One gloo process: the meta-device model, sharded, reads every tensor from the safetensors files and the
    rotary buffers from its own initialisation; written back one tensor at a time in files of at most SHARD_BYTES
    with their index, it loads (from_pretrained) equal to the original, and computes the same logits."""
    import torch.distributed as dist

    from clueflow.models import load_model
    from clueflow.unlearn import sharded

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        model = sharded.load_sharded(tiny_dirs["llama"], dtype=torch.float32, device=torch.device("cpu"))
        assert sharded.is_sharded(next(model.parameters()))
        monkeypatch.setattr(sharded, "SHARD_BYTES", 40_000)  # several files for the tiny model
        sharded.save_sharded(model, tmp_path)
        ids = torch.tensor([[5, 9, 23, 7, 81]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits.clone()
    finally:
        dist.destroy_process_group()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(files) > 1 and set(index["weight_map"].values()) == set(files)
    for f in files:  # a file passes the limit only by holding one tensor larger than it
        tensors = load_file(tmp_path / f)
        assert sum(t.nbytes for t in tensors.values()) <= 40_000 or len(tensors) == 1
    before = load_model(tiny_dirs["llama"])
    after = load_model(tmp_path)
    for name, t in before.state_dict().items():
        assert torch.equal(after.state_dict()[name], t), name
    with torch.no_grad():
        torch.testing.assert_close(logits, before(input_ids=ids).logits, rtol=0, atol=0)
