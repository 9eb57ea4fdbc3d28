"""The computational graph over stock Hugging Face modules (no weight conversion, no forked model files).

Writers (sources), in computation order: ``input`` (the residual entering layer 0), every attention head
``a{l}.h{h}`` (its slice of the output projection applied to the projection's *input*), every MLP ``m{l}``.
Receivers (destinations): ``a{l}.h{h}.q`` per query head, ``a{l}.kv{g}.k`` / ``a{l}.kv{g}.v`` per **KV head**
(grouped-query attention is kept native: query head ``h`` uses KV head ``h // n_rep``), ``m{l}`` (the MLP's
input) and ``logits`` (the final norm's input). An edge ``u → r`` exists iff writer ``u`` is computed before
``r`` reads the residual stream; with GPT-NeoX's parallel residual an MLP reads the layer input, so it gets no
edges from heads of its own layer. Every receiver therefore reads a *prefix* of the writer list.

Per-receiver cut points (used by attribution and by edge patching): a receiver's input is the residual ``x``
entering its norm; the receiver sees ``norm(x)`` through its own weight slice. :class:`Projection` describes,
for each attention receiver, which output columns of which projection module belong to it and the
``[head_dim, d_model]`` weight slice (and bias) that produces them, so Linear (Llama/Mistral/Qwen2), GPT-2's
``Conv1D`` with fused QKV and GPT-NeoX's per-head interleaved QKV all look the same to the algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ClueflowError

LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3")  # pre-norm blocks with separate q/k/v/o Linear layers


def writer_names(n_layers: int, n_heads: int) -> list[str]:
    """``input``, then per layer its heads ``a{l}.h{h}`` and its MLP ``m{l}`` (computation order)."""
    names = ["input"]
    for l in range(n_layers):
        names += [f"a{l}.h{h}" for h in range(n_heads)] + [f"m{l}"]
    return names


@dataclass(frozen=True)
class Projection:
    """One attention receiver's slice: ``module(...)[..., cols] = norm(x) @ weight.T + bias``."""

    module: nn.Module
    cols: slice  # output columns of ``module``
    weight: torch.Tensor  # [head_dim, d_model], "out x in": a detached view of the module's weight
    bias: torch.Tensor | None


@dataclass
class Layer:
    attn_norm: nn.Module
    projections: list[nn.Module]  # the modules whose outputs hold q/k/v (1 if fused, 3 if separate)
    receivers: list[Projection]  # q heads, then k KV heads, then v KV heads
    out_proj: nn.Module
    mlp_norm: nn.Module
    mlp: nn.Module


@dataclass
class Graph:
    model_type: str
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    parallel_residual: bool
    layers: list[Layer] = field(repr=False)
    first_layer: nn.Module = field(repr=False)
    final_norm: nn.Module = field(repr=False)
    out_proj_conv1d: bool = False

    # ---- node and edge bookkeeping ---------------------------------------------------------------------
    @property
    def n_rep(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def writers(self) -> list[str]:
        return writer_names(self.n_layers, self.n_heads)

    def attn_receivers(self, l: int) -> list[str]:
        return ([f"a{l}.h{h}.q" for h in range(self.n_heads)] + [f"a{l}.kv{g}.k" for g in range(self.n_kv_heads)]
                + [f"a{l}.kv{g}.v" for g in range(self.n_kv_heads)])

    @property
    def receivers(self) -> list[str]:
        names = []
        for l in range(self.n_layers):
            names += self.attn_receivers(l) + [f"m{l}"]
        return names + ["logits"]

    def writers_before_layer(self, l: int) -> int:
        return 1 + l * (self.n_heads + 1)

    @property
    def n_sources(self) -> list[int]:
        """For each receiver (in :attr:`receivers` order), how many leading writers it reads."""
        out = []
        for l in range(self.n_layers):
            before = self.writers_before_layer(l)
            out += [before] * (self.n_heads + 2 * self.n_kv_heads)
            out.append(before if self.parallel_residual else before + self.n_heads)
        return out + [len(self.writers)]

    @property
    def n_edges(self) -> int:
        return sum(self.n_sources)

    def edge_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(writer index, receiver index) of every edge, receiver-major."""
        src = [torch.arange(n) for n in self.n_sources]
        dst = [torch.full((n,), r) for r, n in enumerate(self.n_sources)]
        return torch.cat(src), torch.cat(dst)

    def receiver_targets(self) -> list[list[int]]:
        """For each receiver, the writer(s) it feeds inside its block: q head h → head h; KV head g → all query
        heads of its group; MLP input → the MLP; logits → none. Used to follow paths through the graph."""
        w = {name: i for i, name in enumerate(self.writers)}
        out = []
        for l in range(self.n_layers):
            out += [[w[f"a{l}.h{h}"]] for h in range(self.n_heads)]
            group = [[w[f"a{l}.h{h}"] for h in range(self.n_heads) if h // self.n_rep == g]
                     for g in range(self.n_kv_heads)]
            out += group + group
            out.append([w[f"m{l}"]])
        return out + [[]]

    # ---- module-level helpers ----------------------------------------------------------------------------
    def head_outputs(self, l: int, z: torch.Tensor) -> torch.Tensor:
        """Per-head contributions of layer ``l``'s output projection: ``z`` [b, s, H·hd] → [H, b, s, d]
        (without the projection's bias, which is constant)."""
        w = self.layers[l].out_proj.weight
        zh = z.reshape(*z.shape[:-1], self.n_heads, self.head_dim)
        if self.out_proj_conv1d:  # Conv1D stores [in, out]: head h owns rows h·hd..(h+1)·hd
            wh = w.reshape(self.n_heads, self.head_dim, self.d_model)
        else:  # nn.Linear stores [out, in]: head h owns columns h·hd..(h+1)·hd
            wh = w.reshape(self.d_model, self.n_heads, self.head_dim).permute(1, 2, 0)
        return torch.einsum("bshk,hkd->hbsd", zh, wh.to(z.dtype))


def _linear_slices(module: nn.Linear, row_blocks: list[slice]) -> list[Projection]:
    w, b = module.weight.detach(), module.bias.detach() if module.bias is not None else None
    return [Projection(module, rows, w[rows], b[rows] if b is not None else None) for rows in row_blocks]


def _conv1d_slices(module: nn.Module, col_blocks: list[slice]) -> list[Projection]:
    w, b = module.weight.detach(), module.bias.detach()
    return [Projection(module, cols, w[:, cols].T, b[cols]) for cols in col_blocks]


def build_graph(model: nn.Module) -> Graph:
    """Describe ``model``'s graph; raise a clear error for an unsupported architecture."""
    cfg = model.config
    mtype = cfg.model_type
    n_heads = cfg.num_attention_heads
    d = cfg.hidden_size
    head_dim = getattr(cfg, "head_dim", None) or d // n_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    blocks = lambda start, n, step=head_dim: [slice(start + i * step, start + i * step + head_dim)  # noqa: E731
                                              for i in range(n)]
    layers: list[Layer] = []
    if mtype in LLAMA_LIKE:
        core = model.model
        for layer in core.layers:
            at = layer.self_attn
            receivers = (_linear_slices(at.q_proj, blocks(0, n_heads)) + _linear_slices(at.k_proj, blocks(0, n_kv))
                         + _linear_slices(at.v_proj, blocks(0, n_kv)))
            layers.append(Layer(layer.input_layernorm, [at.q_proj, at.k_proj, at.v_proj], receivers, at.o_proj,
                                layer.post_attention_layernorm, layer.mlp))
        return Graph(mtype, len(layers), n_heads, n_kv, head_dim, d, False, layers, core.layers[0], core.norm)
    if mtype == "gpt2":
        core = model.transformer
        for layer in core.h:
            c_attn = layer.attn.c_attn
            receivers = _conv1d_slices(c_attn, blocks(0, n_heads) + blocks(d, n_heads) + blocks(2 * d, n_heads))
            layers.append(Layer(layer.ln_1, [c_attn], receivers, layer.attn.c_proj, layer.ln_2, layer.mlp))
        return Graph(mtype, len(layers), n_heads, n_heads, head_dim, d, False, layers, core.h[0], core.ln_f,
                     out_proj_conv1d=True)
    if mtype == "gpt_neox":
        core = model.gpt_neox
        for layer in core.layers:
            qkv = layer.attention.query_key_value  # output viewed [b, s, H, 3·hd]: per head [q_h | k_h | v_h]
            step = 3 * head_dim
            receivers = _linear_slices(qkv, blocks(0, n_heads, step) + blocks(head_dim, n_heads, step)
                                       + blocks(2 * head_dim, n_heads, step))
            layers.append(Layer(layer.input_layernorm, [qkv], receivers, layer.attention.dense,
                                layer.post_attention_layernorm, layer.mlp))
        return Graph(mtype, len(layers), n_heads, n_heads, head_dim, d, bool(cfg.use_parallel_residual), layers,
                     core.layers[0], core.final_layer_norm)
    raise ClueflowError(f"unsupported architecture {mtype!r} for circuit discovery (supported: "
                        f"{', '.join(LLAMA_LIKE + ('gpt2', 'gpt_neox'))})", field="model")
