"""File-level unlearning step: model + forget/retain sets (+ CLUE masks) → an unlearned HF checkpoint.

``results/checkpoints/{model}/{run}/seed{seed}/{forget}__{retains}/`` holds

* ``config.json``, ``model.safetensors``, tokenizer files: loads with ``AutoModelForCausalLM`` and
  ``lm_eval --model hf,pretrained=<dir>``;
* ``train_log.parquet``: one row per optimizer step — stage, epoch, step, skipped, loss, forget_loss,
  retain_loss (null without a retain term), grad_norm (before clipping, trainable entries only), lr, seconds;
* ``masks/{stage}.safetensors``: each stage's mask, in the mask-file format (absent for full fine-tuning);
* ``unlearn.json``: run, pair, method, options, settings, seed, forget/retain example counts, ``forget_ids`` (the
  ids of the forget rows unlearned, in the set's order), per stage its
  optimizer steps, trainable entries and unlearned-parameter share (or the merged LoRA adapter: r, alpha, dropout,
  target modules, trainable parameters), dtype, wall seconds; with ``unlearn.lr_grid`` (or ``lr_from``),
  ``lr_grid``: the lr search (its run, grid, per-lr validation scores, pick), whose pick is the settings' ``lr``. The device is not
  recorded: it changes no result beyond round-off.

The directory appears complete or not at all (written beside the target, then renamed). :func:`launch` runs
one unlearning in several processes (``unlearn.gpus``); only the first writes the directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch

from ..circuits.graph import build_graph
from ..config import default
from ..data.schema import pair_of_files, read_set
from ..devices import model_device, resolve_device
from ..errors import ClueflowError
from ..io import atomic_path, check_target, read_json, write_json, write_parquet
from ..layout import CHECKPOINT_SUMMARY
from ..masks import load_masks, mask_stats, save_masks
from ..models import DTYPES, load_model, load_tokenizer, save_checkpoint
from ..scoring import pad_id
from .batches import Batches, examples
from .methods import GIVEN_MASKS, Context, method_impl, method_label, needs_graph
from .sharded import is_sharded, load_sharded, save_sharded
from .trainer import Stage, UnlearnData, allot_steps, train, world

SUMMARY = CHECKPOINT_SUMMARY  # a checkpoint's provenance file

def forget_rows(df: pd.DataFrame, ratio: float, seed: int) -> pd.DataFrame:
    """The train split, subsampled as the official code's ``forget_ratio``: > 1 a count, ≤ 1 a fraction."""
    train_rows = df[df["split"] == "train"]
    n = int(ratio) if ratio > 1 else int(round(ratio * len(train_rows)))
    if n > len(train_rows):  # the config check refuses a count above the built set; filtering can leave fewer
        print(f"warning: forget_ratio asks for {n} forget examples; the train split has {len(train_rows)}")
    n = max(1, min(n, len(train_rows)))
    return train_rows.sample(n=n, random_state=seed).sort_index() if n < len(train_rows) else train_rows


def prepare(model, tok, graph, clue_masks, forget_df: pd.DataFrame, retain_df: pd.DataFrame, *, run: str, impl,
            options: dict[str, Any], settings: dict[str, Any], seed: int) -> tuple[list[Stage], UnlearnData]:
    """Method ``impl``'s stages (its attribution and masks computed on ``model`` as it is; ``settings["steps"]``
    split over them) and the batches the trainer draws."""

    def batches(df, kind, salt):
        return Batches(examples(tok, df, kind, max_length=settings["max_length"]), settings["batch_size"],
                       pad_id=pad_id(tok), seed=seed + salt, device=model_device(model))

    data = UnlearnData(forget=batches(forget_df, "forget", 0), refusal=batches(forget_df, "refusal", 0),
                       retain=batches(retain_df, "retain", 1))
    ctx = Context(model=model, tok=tok, graph=graph, data=data, forget_qa=batches(forget_df, "retain", 0),
                  forget_df=forget_df, settings=settings, options=options, clue_masks=clue_masks, seed=seed,
                  forget_batches=lambda kind: batches(forget_df, kind, 0))
    try:
        stages = impl(ctx)
    except ValueError as err:
        raise ClueflowError(str(err), field=f"unlearn.methods.{run}.options") from None
    if settings["steps"] is not None:
        allot_steps(stages, settings["steps"])
    return stages, data


def fit(model, stages: list[Stage], data: UnlearnData, settings: dict[str, Any], autocast: str | None) -> list[dict]:
    """Train ``model`` in place through the stages: the train log."""
    return train(model, stages, data, beta=settings["npo_beta"], grad_clip=settings["grad_clip"],
                 gradient_checkpointing=settings["gradient_checkpointing"], lora=settings["lora"], amp=autocast,
                 joint_retain_pass=settings["joint_retain_pass"])


def unlearn(model, tok, graph, clue_masks, forget_df: pd.DataFrame, retain_df: pd.DataFrame, *, run: str, impl,
            options: dict[str, Any], settings: dict[str, Any], seed: int,
            autocast: str | None = None) -> tuple[list[Stage], list[dict]]:
    """Train ``model`` in place by method ``impl`` (its stages; ``settings["steps"]`` split over them): the stages
    and the train log. :func:`run_unlearn` trains through here, an lr sweep through :func:`sweep_lrs`;
    ``autocast`` (``model.autocast``) is the training forward passes' precision."""
    stages, data = prepare(model, tok, graph, clue_masks, forget_df, retain_df, run=run, impl=impl, options=options,
                           settings=settings, seed=seed)
    return stages, fit(model, stages, data, settings, autocast)


def sweep_lrs(model, tok, graph, clue_masks, forget_df: pd.DataFrame, retain_df: pd.DataFrame, *, grid: list[float],
              run: str, impl, options: dict[str, Any], settings: dict[str, Any], seed: int,
              autocast: str | None = None):
    """Yield ``(lr, stages, log)`` with ``model`` trained at each lr of ``grid`` in turn, each from the same start:
    the weights (kept on the CPU meanwhile), torch's random state and the batches' shuffles are restored before
    each, so each point is the run :func:`unlearn` trains at that lr. The method's attribution and masks do not
    depend on the lr and are computed once; a stage whose lr the method fixed itself keeps it. A method that edits
    the weights itself (a published mode) is run again at each lr. The model holds the last point's weights after."""
    where = model_device(model)
    cuda = [where.index or 0] if where.type == "cuda" else []
    base = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def rng_state():
        return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in cuda]

    def set_rng(state):
        torch.set_rng_state(state[0])
        for d, st in zip(cuda, state[1]):
            torch.cuda.set_rng_state(st, d)

    def build(lr):
        return prepare(model, tok, graph, clue_masks, forget_df, retain_df, run=run, impl=impl, options=options,
                       settings={**settings, "lr": lr}, seed=seed)

    with torch.random.fork_rng(devices=cuda):  # the caller's random state is left as it was
        before = rng_state()
        stages, data = build(grid[0])
        edits = any(s.edit is not None for s in stages)
        after = rng_state()
        streams = [b for b in (data.forget, data.refusal, data.retain) if b is not None]
        shuffles = [b.generator.get_state() for b in streams]
        for i, lr in enumerate(grid):
            if i:
                model.load_state_dict(base)
                if edits:
                    set_rng(before)
                    stages, data = build(lr)
                else:
                    set_rng(after)
                    for b, st in zip(streams, shuffles):
                        b.generator.set_state(st)
                    for s in stages:
                        if not s.fixed_lr:
                            s.lr = lr
            yield lr, stages, fit(model, stages, data, {**settings, "lr": lr}, autocast)


@dataclass
class Inputs:
    """What one run trains on: the tokenizer, the forget rows to unlearn, the retain rows (train split), the model
    (loaded after seeding torch with the run's seed), its graph and the pair's CLUE masks."""

    tok: Any
    forget_df: pd.DataFrame
    retain_df: pd.DataFrame
    model: Any
    graph: Any
    clue_masks: dict | None


def load_inputs(model_dir: str | Path, forget_path: str | Path, retain_paths: list[str | Path], *, method: str,
                settings: dict[str, Any], seed: int, masks: dict[str, str | Path] | None, dtype: str,
                device: str | torch.device, trust_remote_code: bool) -> Inputs:
    tok = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    full = read_set(forget_path, tokenizer=tok)
    if not (full["split"] == "train").any():
        raise ClueflowError("no rows in the train split to unlearn", file=forget_path, field="split")
    forget_df = forget_rows(full, settings["forget_ratio"], seed)
    retain_df = pd.concat([read_set(p)[lambda d: d["split"] == "train"] for p in retain_paths])
    if retain_df.empty:
        raise ClueflowError("no rows in the train split of any retain set", file=retain_paths[0], field="split")
    torch.manual_seed(seed)
    rank, size = world()
    if size > 1 and resolve_device(device).type == "cuda":  # one GPU per process
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    if size > 1 and method in GIVEN_MASKS:  # FSDP2: each process reads only its rows
        model = load_sharded(model_dir, dtype=DTYPES[dtype], device=resolve_device(device),
                             trust_remote_code=trust_remote_code)
    else:
        model = load_model(model_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    graph = build_graph(model) if needs_graph(method) else None  # full-parameter methods run on any architecture
    clue_masks = None
    if masks is not None:  # the pair's CLUE mask files: {"forget": path, "conflict": path}
        clue_masks = {k: load_masks(masks[k], model, graph=graph) for k in ("forget", "conflict")}
    return Inputs(tok, forget_df, retain_df, model, graph, clue_masks)


def run_unlearn(model_dir: str | Path, forget_path: str | Path, retain_paths: list[str | Path],
                out_dir: str | Path, *, run: str, method: str, options: dict[str, Any], settings: dict[str, Any],
                seed: int = 0, masks: dict[str, str | Path] | None = None, dtype: str = default("model.dtype"),
                device: str | torch.device = default("model.device"), trust_remote_code: bool = False,
                lr_search: str | Path | None = None, picked: str | Path | None = None,
                autocast: str | None = default("model.autocast")) -> dict[str, Any]:
    """``lr_search``: the lr search file (:mod:`.lr`, ``unlearn.lr_grid``) of the run or of the run its ``lr_from``
    names, whose pick replaces ``lr``. ``picked``: that search's own checkpoint of its pick (the run's sweep at this
    seed, :func:`clueflow.curve.run_curve`), which is this run: adopted (:func:`adopt`), not trained again."""
    started = time.perf_counter()
    check_target(out_dir, directory=True, marker=SUMMARY)  # before training, not after
    impl, options = method_impl(method, options, run)
    searched = None if lr_search is None else read_json(lr_search)
    if searched is not None:
        settings = {**settings, "lr": searched["lr"]}
    if picked is not None:
        return adopt(picked, out_dir, run=run, method=method, options=options, settings=settings, seed=seed)
    x = load_inputs(model_dir, forget_path, retain_paths, method=method, settings=settings, seed=seed, masks=masks,
                    dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    model, tok, forget_df, retain_df = x.model, x.tok, x.forget_df, x.retain_df
    stages, log = unlearn(model, tok, x.graph, x.clue_masks, forget_df, retain_df, run=run, impl=impl,
                          options=options, settings=settings, seed=seed, autocast=autocast)
    summary = run_summary(run=run, pair=pair_of_files(forget_path, retain_paths), method=method, options=options,
                          settings=settings, seed=seed, inputs=x, stages=[stage_record(s, log, model) for s in stages],
                          dtype=dtype, autocast=autocast, started=started, searched=searched)
    sharded = is_sharded(next(model.parameters()))
    if world()[0] == 0:  # every process holds the same trained weights, or its rows of them (sharded)
        write_run(out_dir, model, tok, {s.name: s.mask for s in stages if s.mask is not None}, log, summary,
                  weights=(lambda d: save_sharded(model, d)) if sharded else None)
    elif sharded:  # its part of gathering each tensor to the first process
        save_sharded(model, None)
    return summary


def run_summary(*, run: str, pair: str, method: str, options: dict[str, Any], settings: dict[str, Any], seed: int,
                inputs: Inputs, stages: list[dict], dtype: str, autocast: str | None, started: float,
                searched: dict[str, Any] | None) -> dict[str, Any]:
    """A run's ``unlearn.json`` (module docstring); ``stages``: their :func:`stage_record`."""
    return dict(run=run, pair=pair, method=method, options=options, settings=settings, seed=seed,
                n_forget=len(inputs.forget_df), n_retain=len(inputs.retain_df),
                forget_ids=inputs.forget_df["id"].tolist(), stages=stages, dtype=dtype, autocast=autocast,
                seconds=round(time.perf_counter() - started, 2), **({} if searched is None else dict(lr_grid=searched)))


def write_run(out_dir: str | Path, model, tok, masks: dict[str, dict], log: list[dict],
              summary: dict[str, Any], weights=None) -> None:
    """The checkpoint directory (module docstring), complete or not at all; ``masks``: per stage, its mask;
    ``weights``: what writes the model into a directory instead of ``save_pretrained`` (a sharded model's)."""
    with atomic_path(out_dir, directory=True, marker=SUMMARY) as tmp:
        save_checkpoint(model, tok, tmp, weights=weights)
        for name, mask in masks.items():
            save_masks({k: m.cpu() for k, m in mask.items()}, tmp / "masks" / f"{name}.safetensors")
        write_parquet(tmp / "train_log.parquet", pd.DataFrame(log),
                      metadata=dict(run=summary["run"], method=summary["method"]))
        write_json(tmp / SUMMARY, summary)


def adopt(picked: str | Path, out_dir: str | Path, **expected: Any) -> dict[str, Any]:
    """``out_dir`` made the checkpoint directory ``picked`` (files hard-linked where the file system allows, else
    copied), after checking that its ``unlearn.json`` records ``expected`` (run, method, options, settings, seed):
    a stale or foreign checkpoint is refused, not adopted. Its summary."""
    picked = Path(picked)
    summary = read_json(picked / SUMMARY)

    def plain(value):  # as JSON records it: tuples are lists
        return json.loads(json.dumps(value))

    for key, value in expected.items():
        if plain(summary.get(key)) != plain(value):
            raise ClueflowError(f"the sweep's checkpoint of its pick was trained with another {key} "
                                f"({summary.get(key)!r}, this run: {value!r}); rerun its lr search",
                                file=picked / SUMMARY, field=key)
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:  # another file system, or one without hard links
            shutil.copy2(src, dst)

    with atomic_path(out_dir, directory=True, marker=SUMMARY) as tmp:
        shutil.copytree(picked, tmp, copy_function=link, dirs_exist_ok=True)
    return summary


def stage_record(stage: Stage, log: list[dict], model) -> dict[str, Any]:
    """A stage as the run's summary records it: the trainer's settings and the steps it took, or, for an edit the
    method made itself, what it did; the mask's sizes either way."""
    if stage.edit is not None:
        done = dict(edit=stage.edit)
    else:
        done = dict(loss=stage.loss, epochs=stage.epochs, lr=stage.lr, retain_weight=stage.retain_weight,
                    forget_weight=stage.forget_weight,
                    optimizer=stage.optimizer,
                    steps=sum(1 for row in log if row["stage"] == stage.name and not row["skipped"]))
    return dict(name=stage.name, **done, full_model=stage.mask is None,
                **({} if stage.mask is None else mask_stats(stage.mask, model)),
                **({} if stage.adapter is None else dict(lora=stage.adapter)))


def launch(processes: int, **kwargs: Any) -> dict[str, Any]:
    """``run_unlearn(**kwargs)`` in ``processes`` processes started by torchrun (one per GPU, on one node or, in a
    SLURM allocation of several nodes, spread over them: :func:`launch_command`); the summary. Their output goes
    to this process's ``sys.stdout`` (a job's log)."""
    # the arguments beside the output: on the file system every node of the job shares
    parent = Path(kwargs["out_dir"]).parent  # a directory, not an identity
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".launch-") as tmp:
        args = Path(tmp) / "unlearn.json"
        args.write_text(json.dumps(kwargs, default=str))
        with subprocess.Popen(launch_command(processes, args, os.environ), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:
                print(line, end="", flush=True)
    if proc.returncode:
        raise SystemExit(proc.returncode)
    return read_json(Path(kwargs["out_dir"]) / SUMMARY)


RENDEZVOUS_PORT = 29500


def launch_command(processes: int, args: Path, env: Mapping[str, str]) -> list[str]:
    """torchrun running this module on ``args``: ``--standalone`` on one node; inside a SLURM allocation of several
    nodes (``SLURM_NNODES``), ``srun`` starts one torchrun per node, ``processes / nodes`` processes each, meeting
    at a c10d rendezvous on the allocation's first node (job id as the rendezvous id)."""
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    target = ["-m", __spec__.name, str(args)]
    nodes = int(env.get("SLURM_NNODES", "1"))
    if nodes <= 1:
        return [*torchrun, "--standalone", f"--nproc_per_node={processes}", *target]
    if processes % nodes:
        raise ClueflowError(f"{processes} processes do not split evenly over the job's {nodes} nodes",
                            field="unlearn.gpus")
    host = first_host(env["SLURM_JOB_NODELIST"])
    port = env.get("MASTER_PORT", str(RENDEZVOUS_PORT))
    return ["srun", f"--nodes={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1", *torchrun,
            f"--nnodes={nodes}", f"--nproc_per_node={processes // nodes}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint={host}:{port}", f"--rdzv_id={env.get('SLURM_JOB_ID', 'clueflow')}", *target]


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``gpu[003-008,011],big1`` → ``gpu003``), as ``scontrol show hostnames``
    would list it first."""
    first = re.match(r"[^,\[]+(\[[^\]]*\])?", nodelist.strip())
    if not first or not first.group(0):
        raise ClueflowError(f"cannot read the SLURM node list {nodelist!r}", field="SLURM_JOB_NODELIST")
    name, ranges = first.group(0).partition("[")[::2]
    return name + ranges.rstrip("]").split(",")[0].split("-")[0] if ranges else name


def runs_table(checkpoints: list[str | Path]) -> pd.DataFrame:
    """One row per unlearning run (a checkpoint directory): its seed, wall time, steps (the trainer's and those of
    a method's own update), lr (none for an edit without one), the grid it was picked from, the run whose search
    picked it and whether that pick reached the rule's level (if any), trainable share, final losses."""
    rows = []
    for ckpt in checkpoints:
        s = read_json(Path(ckpt) / SUMMARY)
        log = pd.read_parquet(Path(ckpt) / "train_log.parquet")
        trained = log[~log["skipped"]] if "skipped" in log else log
        last = trained.iloc[-1] if len(trained) else {}
        uses_lr = any("lr" in st.get("edit", st) for st in s["stages"])  # a closed-form edit has none
        rows.append(dict(run=s["run"], method=method_label(s["method"], s["settings"]), pair=s["pair"], seed=s["seed"], seconds=s["seconds"],
                         steps=sum(st.get("edit", st).get("steps", 0) for st in s["stages"]),
                         n_forget=s["n_forget"], lr=s["settings"]["lr"] if uses_lr else None,
                         lr_grid=", ".join(f"{g:g}" for g in s["lr_grid"]["grid"]) if "lr_grid" in s else None,
                         lr_from=s["lr_grid"]["run"] if "lr_grid" in s else None,
                         lr_reached=s["lr_grid"].get("reached") if "lr_grid" in s else None,
                         unlearned_parameter=max((st.get("unlearned_parameter", 1.0) for st in s["stages"]),
                                                 default=0.0),
                         final_loss=last.get("loss"), final_forget_loss=last.get("forget_loss")))
    return pd.DataFrame(rows)


if __name__ == "__main__":  # one process of launch()
    run_unlearn(**json.loads(Path(sys.argv[1]).read_text()))
