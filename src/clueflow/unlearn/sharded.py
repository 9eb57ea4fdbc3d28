"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the trainer's several-process runs.

Each decoder layer (the classes a transformers model names in ``_no_split_modules``, as accelerate's FSDP plugin
wraps them) and then the root are sharded over every process: a parameter becomes a ``DTensor`` whose rank-local
part is its ``torch.chunk(world, dim=0)[rank]`` rows. The masked optimizer works on each rank's local rows with
the mask cut the same way (:func:`local_mask`), so an entry outside the mask is never written on any rank; the
gradient norm is the all-reduced sum of every rank's squares (:func:`all_sum`). Gradients are reduce-scattered
with the mean over processes, as DDP averages them, so :func:`..trainer.share`'s loss weights carry over.

The checkpoint is the full state dict, gathered to rank 0 on the CPU (:func:`full_state_dict`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


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


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every process calls it; rank 0 gets the full state dict on the CPU, the others an empty dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
