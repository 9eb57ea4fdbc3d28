"""The multi-process unlearning route (unlearn.gpus > 1) on the CPU: two torchrun processes (gloo, DDP through
accelerate), each training on half of every global batch, give one process's weights up to fp32 round-off, and
only the first process writes the checkpoint."""

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


def test_several_gpus_are_refused_for_masked_methods_at_config_check():
    def plan(**runs):
        cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
        for run, spec in runs.items():
            cfg["unlearn"]["methods"].setdefault(run, {}).update(spec)
        return Plan.from_config(cfg, file="my.yaml")

    plan(ga={"gpus": 2})
    with pytest.raises(ClueflowError, match="gpus > 1 is for the full-parameter methods") as err:
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
