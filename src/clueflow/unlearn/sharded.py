"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the trainer's several-process runs.

Each decoder layer (the classes a transformers model names in ``_no_split_modules``, as accelerate's FSDP plugin
wraps them) and then the root are sharded over every process: a parameter becomes a ``DTensor`` whose rank-local
part is its ``torch.chunk(world, dim=0)[rank]`` rows. The masked optimizer works on each rank's local rows with
the mask cut the same way (:func:`local_mask`), so an entry outside the mask is never written on any rank; the
gradient norm is the all-reduced sum of every rank's squares (:func:`all_sum`). Gradients are reduce-scattered
with the mean over processes, as DDP averages them, so :func:`..trainer.share`'s loss weights carry over.

No process holds the full weights: :func:`load_sharded` builds the model on the meta device, shards it and reads
each process's rows of every tensor from the checkpoint's safetensors files; :func:`save_sharded` gathers one tensor
at a time to rank 0, which writes them as safetensors files of at most ``SHARD_BYTES`` with their index (the
layout ``from_pretrained`` reads).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .chunks import SHARD_BYTES


def is_sharded(t) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """A ``DTensor``'s rank-local part (its storage: writes to it are writes to the parameter); a tensor as is."""
    return t.to_local() if is_sharded(t) else t


def shard(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` sharded in place over the default process group, on ``device`` (each rank keeps its rows)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():  # torchrun's environment names the rendezvous
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    kinds = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in kinds]
    if not layers:
        raise ValueError(f"{type(model).__name__} names no decoder layer class (_no_split_modules) to shard by")
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def local_mask(mask: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """The rows of a full-shape ``mask`` that ``param``'s local part holds (all of it for a plain tensor)."""
    if not is_sharded(param):
        return mask
    from torch.distributed.tensor import Shard

    (placement,) = param.placements
    if not isinstance(placement, Shard):
        raise ValueError(f"parameter placed as {placement}, expected a shard")
    rank, size = param.device_mesh.get_local_rank(), param.device_mesh.size()
    chunks = torch.chunk(mask, size, dim=placement.dim)
    part = chunks[rank] if rank < len(chunks) else mask.narrow(placement.dim, 0, 0)
    if tuple(part.shape) != tuple(param.to_local().shape):
        raise ValueError(f"mask rows {tuple(part.shape)} differ from the local shard {tuple(param.to_local().shape)}")
    return part


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the processes (in place; a no-op with one process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t




def _rows(param: torch.Tensor) -> slice:
    """The rows of ``param`` (a DTensor sharded on dim 0) that this process holds."""
    n, size, rank = param.shape[0], param.device_mesh.size(), param.device_mesh.get_local_rank()
    step = -(-n // size)  # torch.chunk's chunk length
    return slice(min(rank * step, n), min((rank + 1) * step, n))


def load_sharded(model_dir: str | Path, *, dtype: torch.dtype, device: torch.device,
                 trust_remote_code: bool = False) -> nn.Module:
    """The checkpoint ``model_dir`` sharded over the processes (:func:`shard`), each reading only its rows; buffers
    (rotary frequencies: computed, not stored) as the model's own initialisation makes them."""
    from accelerate import init_empty_weights
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    with init_empty_weights(include_buffers=False):  # parameters on the meta device, buffers real
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, trust_remote_code=trust_remote_code)
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    shard(model, device)
    model.to_empty(device=device)
    where = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(f, "pt") as opened:
            where.update(dict.fromkeys(opened.keys(), f))
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
        for name, p in model.named_parameters():
            if name not in where:
                raise ValueError(f"{model_dir}: no tensor {name} in its safetensors files (sharded loading reads "
                                 "checkpoints whose tensor names are the model's parameter names)")
            with safe_open(where[name], "pt", device="cpu") as opened:
                part = opened.get_slice(name)
                if is_sharded(p):
                    rows = _rows(p)
                    part = part[rows.start:rows.stop]
                else:
                    part = part[:]
            local(p).copy_(part.to(dtype))
    return model.eval()


def save_sharded(model: nn.Module, directory: Path) -> None:
    """Every process calls it: each tensor gathered in turn; rank 0 writes them (``model.safetensors`` or numbered
    files of at most :data:`SHARD_BYTES` and ``model.safetensors.index.json``) and the model's config."""
    from safetensors.torch import save_file

    rank = dist.get_rank()
    files, current, size, total = [], {}, 0, 0

    def flush():
        nonlocal current, size
        if current:
            files.append(current)
            save_file(current, str(directory / f"part-{len(files)}.safetensors"), metadata={"format": "pt"})
        current, size = {}, 0

    for name, t in model.state_dict().items():
        full = t.full_tensor() if is_sharded(t) else t
        if rank == 0:
            full = full.detach().to("cpu", copy=True).contiguous()
            if size and size + full.nbytes > SHARD_BYTES:
                flush()
            current[name], size, total = full, size + full.nbytes, total + full.nbytes
        del full
    if rank != 0:
        return
    flush()
    names = [sorted(f) for f in files]
    if len(files) == 1:
        (directory / "part-1.safetensors").rename(directory / "model.safetensors")
    else:
        weight_map = {}
        for i, keys in enumerate(names, 1):
            final = f"model-{i:05d}-of-{len(files):05d}.safetensors"
            (directory / f"part-{i}.safetensors").rename(directory / final)
            weight_map.update(dict.fromkeys(keys, final))
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    model.config.save_pretrained(directory)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(directory)
