"""Model anatomy: the one module that knows how each supported architecture is built and how its parts are named.

Everything else (circuits, logic, masks, unlearning methods, evaluation, tables) asks here for

* **node and receiver names** — writers ``input``, heads ``a{l}.h{h}``, MLPs ``m{l}`` (in a mixture-of-experts
  layer each expert ``m{l}.e{e}`` instead), and ``out`` (the logits as a logic node); receivers ``a{l}.h{h}.q``, ``a{l}.kv{g}.k``, ``a{l}.kv{g}.v``, ``m{l}``, ``logits`` —
  formatted by :func:`head` / :func:`mlp` / …, parsed by :func:`parse_node` / :func:`parse_receiver`, and the
  GQA mapping of a receiver to the node(s) it feeds (:func:`receiver_nodes`; query head ``h`` uses KV head
  ``h // n_rep``, as HF's ``repeat_kv``);
* **the modules of each layer** (:func:`describe`): pre-attention norm, the projection module(s) holding q/k/v and
  each head's slice of them, output projection, post-attention norm, pre-MLP norm, the MLP (or MoE block) and its
  output projection, post-MLP norm, the final norm;
* **storage orientation**: ``nn.Linear`` stores ``[out, in]``, GPT-2's ``Conv1D`` ``[in, out]``;
  :func:`output_index` / :func:`input_index` / :func:`out_in` hide the difference;
* **module types** of state-dict names (``…q_proj.weight`` → ``q``) for tables and figures.

A new architecture is one function registered with ``@ARCHITECTURES.register(model_type, ...)`` returning an
:class:`Anatomy` (decoder-style HF models: a :class:`_Decoder` naming their parts).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .errors import ClueflowError

if TYPE_CHECKING:  # annotations only: tables and the CLI read names here without importing torch
    import torch
    from torch import nn

INPUT, OUT, LOGITS = "input", "out", "logits"


# ---- names -------------------------------------------------------------------------------------------------
def head(layer: int, h: int) -> str:
    return f"a{layer}.h{h}"


def mlp(layer: int) -> str:
    return f"m{layer}"


def expert(layer: int, e: int) -> str:
    return f"m{layer}.e{e}"


def block(layer: int, k: int) -> str:
    return f"m{layer}.b{k}"


def mlp_writers(layer: int, experts: tuple[int, ...] = (), blocks: int = 1) -> list[str]:
    """Layer ``layer``'s MLP writers: ``m{l}``; each expert ``m{l}.e{e}`` where ``experts[l]`` (the layer's number
    of experts; 0 or missing: a dense MLP) says so; or, a dense MLP split into ``blocks`` neuron blocks, each block
    ``m{l}.b{k}``."""
    n = _n_experts(layer, experts)
    if n:
        return [expert(layer, e) for e in range(n)]
    return [block(layer, k) for k in range(blocks)] if blocks > 1 else [mlp(layer)]


def mlp_receivers(layer: int, experts: tuple[int, ...] = (), blocks: int = 1) -> list[str]:
    """Layer ``layer``'s MLP receivers: ``m{l}`` (also the router's input in an MoE layer), or each neuron block
    ``m{l}.b{k}`` reading through its own gate/up rows."""
    dense = not _n_experts(layer, experts)
    return [block(layer, k) for k in range(blocks)] if dense and blocks > 1 else [mlp(layer)]


def _n_experts(layer: int, experts: tuple[int, ...]) -> int:
    return experts[layer] if layer < len(experts) else 0  # empty: every layer dense


@dataclass(frozen=True)
class Shape:
    """What a graph's names and edges depend on, as stored in a circuit file's metadata. ``experts[l]`` is layer
    ``l``'s number of experts (0: a dense MLP); empty means every layer is dense."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    experts: tuple[int, ...] = ()
    mlp_blocks: int = 1

    @property
    def _mlp(self) -> dict:
        return dict(experts=self.experts, blocks=self.mlp_blocks)

    def writers(self) -> list[str]:
        return writer_names(self.n_layers, self.n_heads, **self._mlp)

    def receivers(self) -> list[str]:
        return receiver_names(self.n_layers, self.n_heads, self.n_kv_heads, **self._mlp)

    def receiver_nodes(self, receiver: str) -> list[str]:
        return receiver_nodes(receiver, self.n_heads, self.n_kv_heads, **self._mlp)

    def edge_problem(self, src: str, dst: str) -> str | None:
        return edge_problem(src, dst, self.n_layers, self.n_heads, self.n_kv_heads, **self._mlp)

    def meta(self) -> dict:
        """The circuit file's metadata keys (``experts`` only for a mixture-of-experts model, ``mlp_blocks`` only
        when MLPs are split)."""
        out = dict(n_layers=self.n_layers, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads)
        if any(self.experts):
            out["experts"] = list(self.experts)
        return {**out, "mlp_blocks": self.mlp_blocks} if self.mlp_blocks > 1 else out

    @classmethod
    def from_meta(cls, meta: dict) -> "Shape":
        return cls(meta["n_layers"], meta["n_heads"], meta["n_kv_heads"], tuple(meta.get("experts") or ()),
                   int(meta.get("mlp_blocks", 1)))


def attn_receivers(layer: int, n_heads: int, n_kv_heads: int) -> list[str]:
    """Layer ``layer``'s attention receivers: q per query head, then k and v per KV head."""
    return ([f"{head(layer, h)}.q" for h in range(n_heads)] + [f"a{layer}.kv{g}.k" for g in range(n_kv_heads)]
            + [f"a{layer}.kv{g}.v" for g in range(n_kv_heads)])


def writer_names(n_layers: int, n_heads: int, *, experts: tuple[int, ...] = (), blocks: int = 1) -> list[str]:
    """``input``, then per layer its heads and its MLP writer(s) (computation order)."""
    names = [INPUT]
    for layer in range(n_layers):
        names += [head(layer, h) for h in range(n_heads)] + mlp_writers(layer, experts, blocks)
    return names


def receiver_names(n_layers: int, n_heads: int, n_kv_heads: int, *, experts: tuple[int, ...] = (),
                   blocks: int = 1) -> list[str]:
    names = []
    for layer in range(n_layers):
        names += attn_receivers(layer, n_heads, n_kv_heads) + mlp_receivers(layer, experts, blocks)
    return names + [LOGITS]


@dataclass(frozen=True)
class Node:
    """A parsed node name: ``kind`` is ``input``, ``head``, ``mlp``, ``expert`` or ``out``; ``layer``, ``head``
    and ``expert`` where it has one."""

    kind: str
    layer: int | None = None
    head: int | None = None
    expert: int | None = None
    block: int | None = None


_NODE = re.compile(r"^(?:a(\d+)\.h(\d+)|m(\d+)(?:\.e(\d+)|\.b(\d+))?)$")
_RECEIVER = re.compile(r"^(?:a(\d+)\.(?:h(\d+)\.q|kv(\d+)\.([kv]))|m(\d+)(?:\.b(\d+))?)$")


def parse_node(name: str) -> Node:
    if name in (INPUT, OUT):
        return Node(name)
    m = _NODE.match(name)
    if not m:
        raise ValueError(f"not a node name: {name!r} (input, out, a<layer>.h<head>, m<layer>, m<layer>.e<expert> or "
                         f"m<layer>.b<block>)")
    if m[4] is not None:
        return Node("expert", int(m[3]), expert=int(m[4]))
    if m[5] is not None:
        return Node("block", int(m[3]), block=int(m[5]))
    if m[3] is not None:
        return Node("mlp", int(m[3]))
    return Node("head", int(m[1]), int(m[2]))


def parse_receiver(name: str) -> tuple[str, int | None, int | None]:
    """``(kind, layer, index)``: kind ``q`` (index = query head), ``k``/``v`` (index = KV head), ``mlp`` (index =
    neuron block, or None for the whole MLP), ``logits``."""
    if name == LOGITS:
        return LOGITS, None, None
    m = _RECEIVER.match(name)
    if not m:
        raise ValueError(f"not a receiver name: {name!r}")
    if m[5] is not None:
        return "mlp", int(m[5]), None if m[6] is None else int(m[6])
    if m[2] is not None:
        return "q", int(m[1]), int(m[2])
    return m[4], int(m[1]), int(m[3])


def receiver_nodes(receiver: str, n_heads: int, n_kv_heads: int, *, experts: tuple[int, ...] = (),
                   blocks: int = 1) -> list[str]:
    """The node(s) a receiver feeds: q → its head; a KV head's k/v → every query head of its group; an MLP
    input → the MLP, or every expert of the layer (the router reads the same input); a neuron block's input → the
    block; ``logits`` → ``out``."""
    kind, layer, index = parse_receiver(receiver)
    if kind == LOGITS:
        return [OUT]
    if kind == "mlp":
        return mlp_writers(layer, experts, blocks) if index is None else [block(layer, index)]
    if kind == "q":
        return [head(layer, index)]
    n_rep = n_heads // n_kv_heads
    return [head(layer, h) for h in range(index * n_rep, (index + 1) * n_rep)]


def edge_problem(src: str, dst: str, n_layers: int, n_heads: int, n_kv_heads: int, *,
                 experts: tuple[int, ...] = (), blocks: int = 1) -> str | None:
    """Why ``src → dst`` is not an edge of a graph of this shape, or None. A writer feeds only receivers that
    read the residual stream after it was computed, so edges point forward and no set of them forms a cycle."""
    try:
        w = parse_node(src)
        kind, layer, index = parse_receiver(dst)
    except ValueError as err:
        return str(err)
    if w.kind == "out":
        return "'out' is not a writer"
    if w.kind in ("mlp", "expert", "block") and (w.layer >= n_layers or
                                                 src not in mlp_writers(w.layer, experts, blocks)):
        return (f"no node {src!r} in this graph (an MLP writer is m<layer>, m<layer>.e<expert> in an MoE layer, "
                f"m<layer>.b<block> in an MLP split into blocks)")
    if kind == "mlp" and layer < n_layers and dst not in mlp_receivers(layer, experts, blocks):
        return f"no receiver {dst!r} in this graph (its MLP receivers: {', '.join(mlp_receivers(layer, experts, blocks))})"
    if (w.layer is not None and w.layer >= n_layers) or (w.head is not None and w.head >= n_heads):
        return f"no node {src!r} in a graph of {n_layers} layers × {n_heads} heads"
    if (layer is not None and layer >= n_layers) or (kind == "q" and index >= n_heads) or (
            kind in ("k", "v") and index >= n_kv_heads):
        return f"no receiver {dst!r} in a graph of {n_layers} layers × {n_heads} heads ({n_kv_heads} KV)"
    written = 0 if w.kind == "input" else 2 * w.layer + (1 if w.kind == "head" else 2)  # computation order
    reads_up_to = 2 * n_layers if kind == LOGITS else 2 * layer + (1 if kind == "mlp" else 0)
    if written > reads_up_to:
        return f"{src!r} is computed after {dst!r} reads the residual stream"
    return None


# ---- storage orientation -----------------------------------------------------------------------------------
def is_conv1d(module: nn.Module) -> bool:
    """GPT-2's ``Conv1D`` stores its weight ``[in, out]`` (``nn.Linear``: ``[out, in]``)."""
    return type(module).__name__ == "Conv1D"


def output_index(module: nn.Module, units) -> tuple:
    """Index into ``module.weight`` (or a tensor of its shape) selecting the output units ``units``."""
    return (slice(None), units) if is_conv1d(module) else (units, slice(None))


def input_index(module: nn.Module, features) -> tuple:
    """Index into ``module.weight`` selecting the input features ``features``."""
    return (features, slice(None)) if is_conv1d(module) else (slice(None), features)


def out_in(module: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """A tensor of ``module.weight``'s shape viewed ``[out, in]``."""
    return t.T if is_conv1d(module) else t


def per_head_out_weight(out_proj: nn.Module, n_heads: int, head_dim: int, d_model: int) -> torch.Tensor:
    """The output projection's weight as ``[H, head_dim, d_model]``: head h's slice maps its values to the
    residual."""
    w = out_proj.weight
    if is_conv1d(out_proj):  # [in, out]: head h owns rows h·hd..(h+1)·hd
        return w.reshape(n_heads, head_dim, d_model)
    return w.reshape(d_model, n_heads, head_dim).permute(1, 2, 0)  # [out, in]: head h owns columns


# ---- per-architecture structure ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Projection:
    """One attention receiver's slice: ``module(...)[..., cols] = norm(x) @ weight.T + bias``."""

    module: nn.Module
    cols: slice  # output units of ``module``
    weight: torch.Tensor  # [head_dim, d_model], "out x in": a detached view of the module's weight
    bias: torch.Tensor | None


@functools.cache
def _passthrough_class() -> type:
    from torch import nn

    class Passthrough(nn.Module):
        """The pre-norm of a block that reads the residual stream directly (OLMo-2): the identity as a separate
        autograd node, so that the block's own input-gradient can be hooked apart from the skip connection's. It
        is not part of the model; the circuit runtime calls it from a pre-hook on the block."""

        def forward(self, x):
            return x.view_as(x)

    return Passthrough


def is_passthrough(norm: nn.Module) -> bool:
    return isinstance(norm, _passthrough_class())


@dataclass(frozen=True)
class PostNorm:
    """An RMS norm between a block's output and the residual add (Gemma 2/3, OLMo-2):
    ``norm(y) = y · rsqrt(mean(y²) + eps) · (offset + weight)``."""

    module: nn.Module
    offset: float  # Gemma scales by 1 + weight, OLMo-2 by weight

    def scale(self, y: torch.Tensor) -> torch.Tensor:
        """The per-token, per-feature factor of this run (fp32): ``norm(y) == y · scale(y)``. Applied to each head's
        (or expert's) share of ``y``, the shares still sum exactly to what enters the residual on this run."""
        import torch

        eps = getattr(self.module, "eps", None)
        eps = self.module.variance_epsilon if eps is None else eps
        y = y.float()
        return torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps) * (self.offset + self.module.weight.float())


@dataclass
class Layer:
    attn: nn.Module  # the attention block (reads attn_norm's output)
    attn_norm: nn.Module  # a passthrough (is_passthrough) when the block reads the residual directly
    projections: list[nn.Module]  # the modules whose outputs hold q/k/v (1 if fused, 3 if separate)
    receivers: list[Projection]  # q heads, then k KV heads, then v KV heads
    out_proj: nn.Module
    attn_post: PostNorm | None  # norm of the attention output before the residual add
    mlp_norm: nn.Module  # a passthrough likewise
    mlp: nn.Module  # the dense MLP or the sparse MoE block (router + experts)
    mlp_out: nn.Module | None  # a dense MLP's output projection (its input features are the neurons); None for MoE
    mlp_post: PostNorm | None
    n_experts: int = 0  # 0: dense
    # a dense MLP's input projections, each with the row where its neurons start (fused gate|up: one module twice)
    mlp_in: list[tuple[nn.Module, int]] = field(default_factory=list)

    def block_width(self, blocks: int) -> int:
        """Neurons per block when the dense MLP is split into ``blocks`` equal blocks."""
        n = out_in(self.mlp_out, self.mlp_out.weight).shape[1]
        if n % blocks:
            raise ClueflowError(f"{n} MLP neurons do not split into {blocks} equal blocks", field="circuits.mlp_blocks")
        return n // blocks

    def block_receivers(self, k: int, blocks: int) -> list[Projection]:
        """Block ``k``'s slices of the MLP's input projections (its gate and up rows)."""
        w = self.block_width(blocks)
        return [p for module, offset in self.mlp_in for p in _slices(module, [slice(offset + k * w,
                                                                                    offset + (k + 1) * w)])]

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Each expert's routed, weighted output on the MoE block's input ``x`` [b, s, d] → [E, b, s, d] (zero
        where a token is not routed to it); they sum to the block's output. Routing is the block's own router."""
        import torch

        block, flat = self.mlp, x.reshape(-1, x.shape[-1])
        _, weights, index = block.gate(flat)
        ex = block.experts
        out = flat.new_zeros(self.n_experts, *flat.shape)
        for e in range(self.n_experts):
            tok, pos = torch.where(index == e)
            if len(tok):
                gate, up = torch.nn.functional.linear(flat[tok], ex.gate_up_proj[e]).chunk(2, dim=-1)
                y = torch.nn.functional.linear(ex.act_fn(gate) * up, ex.down_proj[e]) * weights[tok, pos, None]
                out[e] = out[e].index_add(0, tok, y.to(out.dtype))
        return out.view(self.n_experts, *x.shape)

    def expert_params(self, e: int) -> list[tuple[nn.Parameter, tuple]]:
        """(parameter, index) pairs expert ``e`` owns: its gate/up and down matrices and its router row."""
        ex = self.mlp.experts
        return [(ex.gate_up_proj, (e,)), (ex.down_proj, (e,)), (self.mlp.gate.weight, (e,))]


@dataclass
class Anatomy:
    model_type: str
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int
    parallel_residual: bool
    layers: list[Layer]
    first_layer: nn.Module
    final_norm: nn.Module


class _Architectures:
    """model_type → structure function; several model types may share one function."""

    def __init__(self):
        self._items: dict[str, Callable[[nn.Module, "_Dims"], Anatomy]] = {}
        self._experts: set[str] = set()

    def register(self, *model_types: str, experts: bool = False):
        """``experts``: the family routes (some of) its MLPs to experts, known from the model type alone."""
        def deco(fn):
            for t in model_types:
                if t in self._items:
                    raise ValueError(f"architecture {t!r} registered twice")
                self._items[t] = fn
                if experts:
                    self._experts.add(t)
            return fn
        return deco

    def names(self) -> list[str]:
        return list(self._items)

    def has_experts(self, model_type: str) -> bool:
        return model_type in self._experts

    def get(self, model_type: str):
        if model_type not in self._items:
            raise ClueflowError(f"unsupported architecture {model_type!r} (supported: {', '.join(self._items)})",
                                field="model")
        return self._items[model_type]


ARCHITECTURES = _Architectures()


@dataclass(frozen=True)
class _Dims:
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_model: int

    def blocks(self, start: int, n: int, step: int | None = None) -> list[slice]:
        step = self.head_dim if step is None else step
        return [slice(start + i * step, start + i * step + self.head_dim) for i in range(n)]


def _slices(module: nn.Module, blocks: list[slice]) -> list[Projection]:
    w = out_in(module, module.weight.detach())
    b = module.bias.detach() if module.bias is not None else None
    return [Projection(module, s, w[s], b[s] if b is not None else None) for s in blocks]


@dataclass(frozen=True)
class _Decoder:
    """Where an HF decoder layer keeps its parts (attribute names; None: the part does not exist)."""

    attn_norm: str | None = "input_layernorm"
    mlp_norm: str | None = "post_attention_layernorm"
    attn_post: str | None = None
    mlp_post: str | None = None
    post_offset: float = 0.0
    fused_qkv: str | None = None  # one projection ``[q heads | k heads | v heads]`` (Phi-3)
    fused_gate_up: str | None = None  # one projection ``[gate | up]`` (Phi-3)


def _decoder(model: nn.Module, d: _Dims, parts: _Decoder) -> Anatomy:
    """Decoder layers with q/k/v(/fused) and o projections, a gated MLP or a routed MoE block, and pre- and/or
    post-norms as ``parts`` names them. q/k norms after the projections (Gemma, Qwen3, OLMo-2) lie downstream of the
    receivers' cut points and need nothing here."""
    core, layers = model.model, []
    norm = lambda layer, name: getattr(layer, name) if name else _passthrough_class()()  # noqa: E731
    post = lambda layer, name: PostNorm(getattr(layer, name), parts.post_offset) if name else None  # noqa: E731
    for layer in core.layers:
        at = layer.self_attn
        if parts.fused_qkv:
            qkv, kv = getattr(at, parts.fused_qkv), d.n_heads * d.head_dim
            projections = [qkv]
            receivers = _slices(qkv, d.blocks(0, d.n_heads) + d.blocks(kv, d.n_kv_heads)
                                + d.blocks(kv + d.n_kv_heads * d.head_dim, d.n_kv_heads))
        else:
            projections = [at.q_proj, at.k_proj, at.v_proj]
            receivers = (_slices(at.q_proj, d.blocks(0, d.n_heads)) + _slices(at.k_proj, d.blocks(0, d.n_kv_heads))
                         + _slices(at.v_proj, d.blocks(0, d.n_kv_heads)))
        moe = hasattr(layer.mlp, "experts")
        if moe:
            mlp_in = []
        elif parts.fused_gate_up:
            fused = getattr(layer.mlp, parts.fused_gate_up)
            mlp_in = [(fused, 0), (fused, out_in(fused, fused.weight).shape[0] // 2)]
        else:
            mlp_in = [(layer.mlp.gate_proj, 0), (layer.mlp.up_proj, 0)]
        layers.append(Layer(at, norm(layer, parts.attn_norm), projections, receivers, at.o_proj,
                            post(layer, parts.attn_post), norm(layer, parts.mlp_norm), layer.mlp,
                            None if moe else layer.mlp.down_proj, post(layer, parts.mlp_post),
                            layer.mlp.experts.num_experts if moe else 0, mlp_in))
    return Anatomy(model.config.model_type, d.n_heads, d.n_kv_heads, d.head_dim, d.d_model, False, layers,
                   core.layers[0], core.norm)


# Llama-like pre-norm blocks; Mixtral and Qwen3-MoE replace (some) MLPs with routed experts
ARCHITECTURES.register("llama", "mistral", "qwen2", "qwen3")(lambda model, d: _decoder(model, d, _Decoder()))
ARCHITECTURES.register("mixtral", "qwen3_moe", experts=True)(lambda model, d: _decoder(model, d, _Decoder()))
ARCHITECTURES.register("phi3")(lambda model, d: _decoder(model, d, _Decoder(fused_qkv="qkv_proj",
                                                                          fused_gate_up="gate_up_proj")))
# Gemma 2/3: a norm before and after each block; the norms scale by (1 + weight)
ARCHITECTURES.register("gemma2", "gemma3_text")(lambda model, d: _decoder(model, d, _Decoder(
    mlp_norm="pre_feedforward_layernorm", attn_post="post_attention_layernorm",
    mlp_post="post_feedforward_layernorm", post_offset=1.0)))
# OLMo-2: no pre-norms; each block's output is normed before the residual add
ARCHITECTURES.register("olmo2")(lambda model, d: _decoder(model, d, _Decoder(
    attn_norm=None, mlp_norm=None, attn_post="post_attention_layernorm", mlp_post="post_feedforward_layernorm")))


@ARCHITECTURES.register("gpt2")
def _gpt2(model: nn.Module, d: _Dims) -> Anatomy:
    """Conv1D everywhere, fused QKV ``[q | k | v]`` in ``c_attn``."""
    core, layers = model.transformer, []
    for layer in core.h:
        c_attn = layer.attn.c_attn
        m = d.d_model
        receivers = _slices(c_attn, d.blocks(0, d.n_heads) + d.blocks(m, d.n_heads) + d.blocks(2 * m, d.n_heads))
        layers.append(Layer(layer.attn, layer.ln_1, [c_attn], receivers, layer.attn.c_proj, None, layer.ln_2,
                            layer.mlp, layer.mlp.c_proj, None, mlp_in=[(layer.mlp.c_fc, 0)]))
    return Anatomy("gpt2", d.n_heads, d.n_heads, d.head_dim, d.d_model, False, layers, core.h[0], core.ln_f)


@ARCHITECTURES.register("gpt_neox")
def _gpt_neox(model: nn.Module, d: _Dims) -> Anatomy:
    """Fused QKV viewed ``[b, s, H, 3·hd]``: per head ``[q_h | k_h | v_h]``; optional parallel residual."""
    core, layers = model.gpt_neox, []
    step = 3 * d.head_dim
    for layer in core.layers:
        qkv = layer.attention.query_key_value
        receivers = _slices(qkv, d.blocks(0, d.n_heads, step) + d.blocks(d.head_dim, d.n_heads, step)
                            + d.blocks(2 * d.head_dim, d.n_heads, step))
        layers.append(Layer(layer.attention, layer.input_layernorm, [qkv], receivers, layer.attention.dense, None,
                            layer.post_attention_layernorm, layer.mlp, layer.mlp.dense_4h_to_h, None,
                            mlp_in=[(layer.mlp.dense_h_to_4h, 0)]))
    return Anatomy("gpt_neox", d.n_heads, d.n_heads, d.head_dim, d.d_model, bool(model.config.use_parallel_residual),
                   layers, core.layers[0], core.final_layer_norm)


def describe(model: nn.Module) -> Anatomy:
    """``model``'s structure; a clear one-line error for an unsupported architecture."""
    cfg = model.config
    n_heads, d_model = cfg.num_attention_heads, cfg.hidden_size
    dims = _Dims(n_heads, getattr(cfg, "num_key_value_heads", None) or n_heads,
                 getattr(cfg, "head_dim", None) or d_model // n_heads, d_model)
    return ARCHITECTURES.get(cfg.model_type)(model, dims)


def param_modules(model: nn.Module) -> dict[str, nn.Module]:
    """State-dict parameter name → the module that owns it."""
    return {f"{m}.{p}" if m else p: module for m, module in model.named_modules()
            for p, _ in module.named_parameters(recurse=False)}


# ---- module types ------------------------------------------------------------------------------------------
MODULE_TYPES = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate", "up_proj": "up",
                "down_proj": "down", "c_attn": "qkv", "query_key_value": "qkv", "qkv_proj": "qkv", "c_proj": "o|down",
                "dense": "o", "c_fc": "up", "dense_h_to_4h": "up", "dense_4h_to_h": "down",
                "gate_up_proj": "gate|up", "gate": "router"}


def module_type(name: str) -> str:
    """State-dict name → module type (``model.layers.3.self_attn.q_proj.weight`` → ``q``)."""
    parts = name.split(".")
    if len(parts) < 2:
        return name
    owner = parts[-1] if parts[-1] in MODULE_TYPES else parts[-2]  # experts keep 3-D parameters without ".weight"
    return MODULE_TYPES.get(owner, owner)
