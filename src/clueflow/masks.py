"""Masks stage: node categories → parameter masks (safetensors), with the correct head slices.

``results/masks/{model}/{forget}__{retains}/{forget,conflict}.safetensors`` hold one bool tensor per maskable
parameter, keyed by its state-dict name and with its shape; True = the unlearning stage may update the entry.
Maskable are the attention projections (q/k/v/o, fused QKV) and the MLP parameters; embeddings and norms are
never masked and do not appear. A head ``a{l}.h{h}`` owns

* the output units of its q slice, of its **KV head**'s k and v slices (``h // n_rep``, shared with the other
  query heads of the group under GQA) and the output projection's **input features** h·hd..(h+1)·hd — rows or
  columns depending on how each architecture stores its weights, fused QKV included: the slices and
  orientations come from :mod:`clueflow.anatomy`;
* the matching bias entries. An MLP node ``m{l}`` owns its whole MLP. An expert ``m{l}.e{e}`` of a
  mixture-of-experts layer owns its slice ``[e]`` of the experts' gate/up and down tensors and its router row
  (the router's logit for that expert).

Optional base mask (``base: wanda``, off by default): the official CLUE code starts every mask from a WANDA mask
(per output unit, the top ``ratio`` of ``|W| · ‖X‖₂`` over calibration inputs), which produces the paper's
"Unlearned Parameter" figures; the clean default adds nothing.
"""

from __future__ import annotations


from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import anatomy
from .circuits.graph import Graph, build_graph
from .config import default
from .devices import model_device
from .errors import ClueflowError
from .io import atomic_path, read_json, write_json
from .solve import read_assignment
from .models import load_model, load_tokenizer


def maskable(model: nn.Module, graph: Graph) -> dict[str, nn.Parameter]:
    """Every parameter of the attention projections and MLPs, by state-dict name."""
    modules = set()
    for layer in graph.layers:
        modules.update(id(m) for m in [*layer.projections, layer.out_proj])
        modules.update(id(m) for m in layer.mlp.modules())
    out = {}
    for mname, module in model.named_modules():
        if id(module) in modules:
            for pname, p in module.named_parameters(recurse=False):
                out[f"{mname}.{pname}" if mname else pname] = p
    return out


def _reads_and_writes(reads, out_proj: nn.Module, cols: slice) -> list[tuple[nn.Parameter, tuple]]:
    """A unit's rows of the projections it reads through (with their bias entries) and its input features
    ``cols`` of the projection it writes through."""
    out = []
    for spec in reads:
        m = spec.module
        out.append((m.weight, anatomy.output_index(m, spec.cols)))
        if m.bias is not None:
            out.append((m.bias, (spec.cols,)))
    return out + [(out_proj.weight, anatomy.input_index(out_proj, cols))]


def node_slices(graph: Graph, node: str) -> list[tuple[nn.Parameter, tuple]]:
    """(parameter, index) pairs owned by ``node``; index is a tuple usable as ``mask[index] = True``."""
    ref = anatomy.parse_node(node)
    if ref.kind == "mlp":
        return [(p, (...,)) for p in graph.layers[ref.layer].mlp.parameters()]
    if ref.kind == "expert":
        return graph.layers[ref.layer].expert_params(ref.expert)
    if ref.kind == "block":  # its gate/up rows and its down-projection columns
        layer = graph.layers[ref.layer]
        w = layer.block_width(graph.mlp_blocks)
        return _reads_and_writes(layer.block_receivers(ref.block, graph.mlp_blocks), layer.mlp_out,
                                 slice(ref.block * w, (ref.block + 1) * w))
    if ref.kind != "head":
        return []  # input / out: never masked
    layer, h = graph.layers[ref.layer], ref.head
    g = h // graph.n_rep
    owned = [layer.receivers[h], layer.receivers[graph.n_heads + g],
             layer.receivers[graph.n_heads + graph.n_kv_heads + g]]
    return _reads_and_writes(owned, layer.out_proj, slice(h * graph.head_dim, (h + 1) * graph.head_dim))


def build_masks(model: nn.Module, nodes: Iterable[str], *, graph: Graph | None = None,
                base: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    graph = graph or build_graph(model)
    params = maskable(model, graph)
    name_of = {id(p): n for n, p in params.items()}
    masks = {n: (base[n].clone() if base and n in base else torch.zeros(p.shape, dtype=torch.bool))
             for n, p in params.items()}
    for node in nodes:
        for p, index in node_slices(graph, node):
            masks[name_of[id(p)]][index] = True
    return masks


def matrices(t: torch.Tensor) -> list[torch.Tensor]:
    """The weight matrices in a tensor of a parameter's shape: itself if 2-D, each ``[e]`` of experts' 3-D tensors,
    none for a vector."""
    return [t] if t.dim() == 2 else list(t) if t.dim() == 3 else []


def mask_stats(masks: dict[str, torch.Tensor], model: nn.Module) -> dict[str, Any]:
    """The paper's "Unlearned Parameter" (mean over weight matrices of the masked fraction) and the share of all
    model parameters that may change."""
    weights = [w for m in masks.values() for w in matrices(m)]
    selected = sum(int(m.sum()) for m in masks.values())
    total = sum(p.numel() for p in model.parameters())
    return dict(unlearned_parameter=float(sum(m.float().mean() for m in weights) / max(len(weights), 1)),
                fraction_of_all_parameters=selected / total, selected_entries=selected,
                weight_matrices=len(weights))


def save_masks(masks: dict[str, torch.Tensor], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in masks.items()}, str(tmp), metadata={"format": "clueflow-mask-v1"})


def load_masks(path: str | Path, model: nn.Module | None = None, *, graph: Graph | None = None
               ) -> dict[str, torch.Tensor]:
    """Read a mask file (CPU bool tensors, wherever the model is); with a model, check every key and shape
    against its parameters."""
    path = Path(path)
    try:
        masks = load_file(str(path))
    except Exception as err:
        raise ClueflowError(f"not a readable safetensors mask file ({type(err).__name__})", file=path) from None
    if model is not None:
        params = dict(model.named_parameters())
        for name, m in masks.items():
            if name not in params:
                raise ClueflowError("no such parameter in the model", file=path, field=name)
            if tuple(m.shape) != tuple(params[name].shape):
                raise ClueflowError(f"mask shape {tuple(m.shape)} != parameter shape {tuple(params[name].shape)}",
                                    file=path, field=name)
            if m.dtype != torch.bool:
                raise ClueflowError(f"mask dtype {m.dtype} is not bool", file=path, field=name)
        expected = set(maskable(model, graph or build_graph(model)))
        if set(masks) != expected:
            missing = sorted(expected - set(masks))
            raise ClueflowError(f"not the model's maskable parameters: {len(missing)} missing (e.g. {missing[:1]}), "
                                f"{len(set(masks) - expected)} not maskable", file=path, field="keys")
    return masks


@torch.no_grad()
def wanda_base(model: nn.Module, tok, texts: list[str], *, ratio: float = 0.2, graph: Graph | None = None,
               max_length: int = 128) -> dict[str, torch.Tensor]:
    """WANDA masks: per output unit, the top ``ratio`` of |W| · ‖X_in‖₂ (X = the weight's inputs on ``texts``).

    Norms accumulate in fp32 on the model's device; the masks come back as CPU bool tensors."""
    graph = graph or build_graph(model)
    params = maskable(model, graph)
    device = model_device(model)
    modules = {n: m for n, m in model.named_modules() if f"{n}.weight" in params and params[f"{n}.weight"].dim() == 2}
    sumsq: dict[str, torch.Tensor] = {}

    def hook(name):
        def pre(module, args):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sumsq[name] = sumsq.get(name, 0) + (x * x).sum(0)
        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    try:
        for text in texts:
            model(**tok(text, return_tensors="pt", truncation=True, max_length=max_length).to(device))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, module in modules.items():
        score = anatomy.out_in(module, module.weight.detach().abs().float()) * sumsq[name].sqrt()[None, :]
        k = max(1, int(round(ratio * score.shape[1])))  # rank within each output unit
        mask = torch.zeros_like(score, dtype=torch.bool).scatter_(1, score.topk(k, dim=1).indices, True)
        out[f"{name}.weight"] = anatomy.out_in(module, mask).contiguous().cpu()
    return out


def run_masks(assignment_path: str | Path, model_dir: str | Path, forget_out: str | Path, conflict_out: str | Path,
              stats_out: str | Path, *, base: str = default("masks.base"),
              wanda_ratio: float = default("masks.wanda_ratio"), calibration: str | Path | None = None,
              n_calibration: int = default("masks.n_calibration"), dtype: str = default("model.dtype"),
              device: str = default("model.device")) -> dict[str, Any]:
    """File-level step: assignment + model → forget/conflict masks + statistics JSON. The model (in ``dtype``,
    on ``device``) only computes the WANDA base; the masks are built and written on the CPU."""
    # without WANDA the model is only read for its shapes: no accelerator needed
    model = load_model(model_dir, dtype=dtype, device=device if base == "wanda" else "cpu")
    # the nodes name the graph's MLP blocks (m{l}.b{k}); checked against the graph built with as many
    blocks = 1 + max((n.block for n in map(anatomy.parse_node, read_assignment(assignment_path)["node"])
                      if n.block is not None), default=0)
    graph = build_graph(model, mlp_blocks=blocks)
    table = read_assignment(assignment_path, nodes=graph.writers)
    base_masks = None
    if base == "wanda":
        if calibration is None:
            raise ClueflowError("the WANDA base mask needs calibration data", field="masks.base")
        texts = pd.read_parquet(calibration)
        texts = (texts["text"].where(texts["text"].notna(), texts["prompt"] + texts["answer"])).tolist()
        base_masks = wanda_base(model, load_tokenizer(model_dir), texts[:n_calibration], ratio=wanda_ratio,
                                graph=graph)
    nodes = {c: table.loc[table["category"] == c, "node"].tolist() for c in ("forget", "conflict")}
    masks = {c: build_masks(model, nodes[c], graph=graph, base=base_masks) for c in nodes}
    save_masks(masks["forget"], forget_out)
    save_masks(masks["conflict"], conflict_out)
    union = {k: masks["forget"][k] | masks["conflict"][k] for k in masks["forget"]}
    stats = dict(base=base, nodes={c: len(v) for c, v in nodes.items()},
                 forget=mask_stats(masks["forget"], model), conflict=mask_stats(masks["conflict"], model),
                 union=mask_stats(union, model))
    write_json(stats_out, stats)
    return stats


def localization_table(solve_summaries: Iterable[str | Path], mask_stats_files: Iterable[str | Path]) -> pd.DataFrame:
    """One row per forget/retain pair from the solve summaries and mask statistics (same order). Node coverage is
    the share of the graph's nodes (``input`` aside) that the forget circuit, and the retain circuits together,
    touch."""
    rows = []
    for s_path, m_path in zip(solve_summaries, mask_stats_files):
        s, m = read_json(s_path), read_json(m_path)
        rows.append(dict(forget=s["forget"], retain="+".join(s["retain"]), phi_satisfiable=s["phi_satisfiable"],
                         **{f"n_{c}": s["counts"][c] for c in s["counts"]},
                         node_coverage_forget=s["node_coverage"]["forget"],
                         node_coverage_retain=s["node_coverage"]["retain"],
                         unlearned_forget=m["forget"]["unlearned_parameter"],
                         unlearned_conflict=m["conflict"]["unlearned_parameter"],
                         unlearned_union=m["union"]["unlearned_parameter"], base=m["base"],
                         solve_seconds=s["seconds"]))
    return pd.DataFrame(rows)
