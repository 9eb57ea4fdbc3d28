"""The computational graph over stock Hugging Face modules (no weight conversion, no forked model files).

Writers (sources), in computation order: ``input`` (the residual entering layer 0), every attention head
``a{l}.h{h}`` (its slice of the output projection applied to the projection's *input*), every MLP ``m{l}`` — or,
in a mixture-of-experts layer, every expert ``m{l}.e{e}`` (its routed, weighted output). Where a norm sits
between a block and the residual add (Gemma 2/3, OLMo-2), each writer is its share of the normed output: the
norm's per-token factor of the run where it was captured times the head's (expert's) own output, so that the
shares sum exactly to what entered the residual on that run (a linearization of the post-norm at that run).
Receivers (destinations): ``a{l}.h{h}.q`` per query head, ``a{l}.kv{g}.k`` / ``a{l}.kv{g}.v`` per **KV head**
(grouped-query attention is kept native: query head ``h`` uses KV head ``h // n_rep``), ``m{l}`` (the MLP's
input) and ``logits`` (the final norm's input). An edge ``u → r`` exists iff writer ``u`` is computed before
``r`` reads the residual stream; with GPT-NeoX's parallel residual an MLP reads the layer input, so it gets no
edges from heads of its own layer. Every receiver therefore reads a *prefix* of the writer list.

Per-receiver cut points (used by attribution and by edge patching): a receiver's input is the residual ``x``
entering its norm; the receiver sees ``norm(x)`` through its own weight slice. :class:`Projection` describes,
for each attention receiver, which output columns of which projection module belong to it and the
``[head_dim, d_model]`` weight slice (and bias) that produces them, so separate, fused and per-head interleaved
QKV projections in either storage orientation all look the same to the algorithms. Which modules those are,
per architecture, and every node and receiver name come from :mod:`clueflow.anatomy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .. import anatomy
from ..errors import ClueflowError
from ..anatomy import Layer, Projection  # noqa: F401  (re-exported: the graph's per-layer parts)


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
    mlp_blocks: int = 1  # neuron blocks per dense MLP (circuits.mlp_blocks): each a writer and a receiver

    # ---- node and edge bookkeeping ---------------------------------------------------------------------
    @property
    def n_rep(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def shape(self) -> anatomy.Shape:
        return anatomy.Shape(self.n_layers, self.n_heads, self.n_kv_heads,
                             tuple(layer.n_experts for layer in self.layers), self.mlp_blocks)

    @property
    def writers(self) -> list[str]:
        return self.shape.writers()

    def attn_receivers(self, l: int) -> list[str]:
        return anatomy.attn_receivers(l, self.n_heads, self.n_kv_heads)

    @property
    def receivers(self) -> list[str]:
        return self.shape.receivers()

    def mlp_writers(self, l: int) -> int:
        """How many writers layer ``l``'s MLP contributes (1, its number of experts, or its neuron blocks)."""
        return self.layers[l].n_experts or self.mlp_blocks

    def split(self, l: int) -> bool:
        """Whether layer ``l``'s MLP is split into neuron blocks (each a writer and a receiver)."""
        return self.mlp_blocks > 1 and not self.layers[l].n_experts

    def mlp_receiver_parts(self, l: int) -> list[list[Projection]]:
        """Per MLP receiver of layer ``l`` (a split MLP: its blocks), the projection slices it reads through."""
        return [self.layers[l].block_receivers(k, self.mlp_blocks) for k in range(self.mlp_blocks)]

    def writers_before_layer(self, l: int) -> int:
        return 1 + l * self.n_heads + sum(self.mlp_writers(j) for j in range(l))

    @property
    def n_sources(self) -> list[int]:
        """For each receiver (in :attr:`receivers` order), how many leading writers it reads."""
        out = []
        for l in range(self.n_layers):
            before = self.writers_before_layer(l)
            out += [before] * (self.n_heads + 2 * self.n_kv_heads)
            out += [before if self.parallel_residual else before + self.n_heads] * (self.mlp_blocks if self.split(l)
                                                                                    else 1)
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
        """For each receiver, the writer(s) it feeds inside its block (:func:`anatomy.receiver_nodes`; logits
        feed none). Used to follow paths through the graph."""
        w = {name: i for i, name in enumerate(self.writers)}
        shape = self.shape
        return [[w[n] for n in shape.receiver_nodes(r) if n in w] for r in self.receivers]

    def mlp_outs(self, method: str) -> list[nn.Module]:
        """Each layer's dense MLP output projection, for methods that score or edit MLP neurons; one line naming the
        first mixture-of-experts layer otherwise (its neurons belong to experts, not to one projection)."""
        moe = [l for l, layer in enumerate(self.layers) if layer.mlp_out is None]
        if moe:
            raise ClueflowError(f"{method} works on the neurons of dense MLPs, and layer {moe[0]} of this "
                                f"{self.model_type} model is a mixture of experts", field="unlearn.methods")
        return [layer.mlp_out for layer in self.layers]

    # ---- module-level helpers ----------------------------------------------------------------------------
    def head_outputs(self, l: int, z: torch.Tensor) -> torch.Tensor:
        """Per-head contributions of layer ``l``'s output projection: ``z`` [b, s, H·hd] → [H, b, s, d]
        (without the projection's bias, which is constant)."""
        wh = anatomy.per_head_out_weight(self.layers[l].out_proj, self.n_heads, self.head_dim, self.d_model)
        zh = z.reshape(*z.shape[:-1], self.n_heads, self.head_dim)
        return torch.einsum("bshk,hkd->hbsd", zh, wh.to(z.dtype))

    def block_outputs(self, l: int, act: torch.Tensor) -> torch.Tensor:
        """Per-block contributions of layer ``l``'s MLP output projection: neuron activations ``act`` [b, s, I] →
        [K, b, s, d] (without the projection's bias, which is constant)."""
        out = self.layers[l].mlp_out
        w = self.layers[l].block_width(self.mlp_blocks)
        wk = anatomy.per_head_out_weight(out, self.mlp_blocks, w, self.d_model)
        return torch.einsum("bskn,knd->kbsd", act.reshape(*act.shape[:-1], self.mlp_blocks, w), wk.to(act.dtype))


def build_graph(model: nn.Module, *, mlp_blocks: int = 1) -> Graph:
    """Describe ``model``'s graph (its structure from :mod:`clueflow.anatomy`), each dense MLP split into
    ``mlp_blocks`` neuron blocks."""
    a = anatomy.describe(model)
    graph = Graph(a.model_type, len(a.layers), a.n_heads, a.n_kv_heads, a.head_dim, a.d_model, a.parallel_residual,
                  a.layers, a.first_layer, a.final_norm, mlp_blocks)
    for l in range(graph.n_layers):
        if graph.split(l):
            graph.layers[l].block_width(mlp_blocks)  # one line now if the neurons do not split evenly
    return graph
