"""Circuit selection (top edges by |score|, pruned to paths input → logits, equal sizes in both directions; or,
under a node budget, the top nodes first and the top edges among them), AND/OR/ADDER gate labels, and
faithfulness/sparsity by real edge patching.

All circuits are bool matrices ``[W, R]`` over writers × receivers (entries that are not edges stay False).
"""

from __future__ import annotations

from typing import Iterable

import torch

from .graph import Graph
from .runtime import Batch, capture, logit_diff, patched_logits

GATES = ("AND", "OR", "ADDER")


def edge_mask(graph: Graph) -> torch.Tensor:
    n_src = torch.tensor(graph.n_sources)
    return torch.arange(len(graph.writers))[:, None] < n_src[None, :]


def target_matrix(graph: Graph) -> torch.Tensor:
    """``T[r, w]`` is True when receiver ``r`` feeds writer ``w`` inside its block (q/k/v → head, MLP in → MLP)."""
    t = torch.zeros(len(graph.receivers), len(graph.writers), dtype=torch.bool)
    for r, ws in enumerate(graph.receiver_targets()):
        t[r, ws] = True
    return t


def prune(graph: Graph, keep: torch.Tensor) -> torch.Tensor:
    """Keep only edges on a path from ``input`` to ``logits`` through kept edges (and the q/k/v → head,
    MLP-input → MLP dependencies inside each block)."""
    t = target_matrix(graph)
    keep = keep & edge_mask(graph)
    writers = torch.zeros(len(graph.writers), dtype=torch.bool)
    writers[0] = True  # reachable from the input
    while True:
        receivers = (keep & writers[:, None]).any(0)
        new = writers | (t & receivers[:, None]).any(0)
        if torch.equal(new, writers):
            break
        writers = new
    live_receivers = torch.zeros(len(graph.receivers), dtype=torch.bool)
    live_receivers[-1] = True  # logits
    while True:
        useful_writers = (keep & live_receivers[None, :]).any(1)
        new = live_receivers | (t & useful_writers[None, :]).any(1)
        if torch.equal(new, live_receivers):
            break
        live_receivers = new
    return keep & writers[:, None] & live_receivers[None, :]


def top_edges(graph: Graph, scores: torch.Tensor, k: int, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """The ``k`` edges with the largest |score| (ties broken by edge order, so the result is deterministic), among
    the ``allowed`` ones when given."""
    mask = edge_mask(graph) if allowed is None else edge_mask(graph) & allowed
    flat = torch.where(mask, scores.abs(), torch.full_like(scores, -1.0)).flatten()
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order] = True
    return keep.view_as(scores) & mask


def circuit_of_size(graph: Graph, scores: torch.Tensor, size: int, allowed: torch.Tensor | None = None
                    ) -> torch.Tensor:
    """The pruned top-k circuit (among ``allowed`` edges) for the smallest k whose pruned size reaches ``size``
    (pruned size grows monotonically with k, so a binary search finds it)."""
    lo, hi = min(size, graph.n_edges), graph.n_edges
    while lo < hi:
        mid = (lo + hi) // 2
        if int(prune(graph, top_edges(graph, scores, mid, allowed)).sum()) >= size:
            hi = mid
        else:
            lo = mid + 1
    return prune(graph, top_edges(graph, scores, lo, allowed))


def node_scores(graph: Graph, scores: torch.Tensor) -> torch.Tensor:
    """Per writer: the summed |score| of the edges it sends and of the edges its receivers (q/k/v, MLP or block
    input) take in."""
    a = torch.where(edge_mask(graph), scores.abs().float(), torch.zeros((), dtype=torch.float32))
    return a.sum(1) + target_matrix(graph).T.float() @ a.sum(0)


def node_edges(graph: Graph, scores: torch.Tensor, max_nodes: int) -> torch.Tensor:
    """The edges among the ``max_nodes`` nodes of highest :func:`node_scores` (ties by node order; the input and
    the logits always in): edges from a kept writer into a receiver that feeds kept nodes only (a key/value group
    shared by several heads only when all of them are kept) or into the logits."""
    s = node_scores(graph, scores)
    s[0] = float("inf")  # the input
    nodes = torch.zeros(len(s), dtype=torch.bool)
    nodes[torch.sort(s, descending=True, stable=True).indices[:max_nodes + 1]] = True
    receivers = ~(target_matrix(graph) & ~nodes[None, :]).any(1)  # the logits feed no node: always in
    return edge_mask(graph) & nodes[:, None] & receivers[None, :]


def node_count(graph: Graph, keep: torch.Tensor) -> int:
    """Nodes (heads, MLPs, experts, blocks; ``input`` aside) a circuit touches."""
    return int(node_mask(graph, keep)[1:].sum())


def size_within_nodes(graph: Graph, scores: torch.Tensor, max_nodes: int) -> int:
    """The most edges a pruned top-k circuit of ``scores`` can hold while touching at most ``max_nodes`` nodes
    (node count and pruned size both grow monotonically with k, so a binary search finds the largest k)."""
    lo, hi = 0, graph.n_edges
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if node_count(graph, prune(graph, top_edges(graph, scores, mid))) <= max_nodes:
            lo = mid
        else:
            hi = mid - 1
    return int(prune(graph, top_edges(graph, scores, lo)).sum())


def gate_labels(noising: torch.Tensor, denoising: torch.Tensor) -> torch.Tensor:
    """Per edge of the union: 0 = AND (only in the noising circuit, with ≥ 2 such inputs at the same receiver),
    1 = OR (only in the denoising circuit, ≥ 2 such inputs), 2 = ADDER (everything else); -1 outside."""
    ns_only, dn_only = noising & ~denoising, denoising & ~noising
    labels = torch.full(noising.shape, -1, dtype=torch.int8)
    labels[noising | denoising] = 2
    labels[ns_only & (ns_only.sum(0, keepdim=True) >= 2)] = 0
    labels[dn_only & (dn_only.sum(0, keepdim=True) >= 2)] = 1
    return labels


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) over the vocabulary, per row."""
    lp, lq = torch.log_softmax(p_logits.float(), -1), torch.log_softmax(q_logits.float(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


@torch.no_grad()
def faithfulness(model, graph: Graph, batches: Iterable[Batch], keep: torch.Tensor, direction: str) -> dict:
    """Patch every edge outside ``keep`` and measure how much of the behaviour the circuit carries.

    ``noising``: base = clean run, edges outside the circuit carry corrupted activations (is C sufficient to
    keep the clean behaviour?). ``denoising``: base = corrupted run, edges outside carry clean activations.
    Returns ``normalized`` = (m(C) − m(source)) / (m(base) − m(source)) (means over examples; 1 = the circuit
    reproduces the full model, 0 = no better than the other run) and ``kl`` = mean KL(full ‖ circuit) at the
    answer position. Weights are frozen while patching (:func:`patched_logits`).
    """
    base, other = ("clean", "corrupted") if direction == "noising" else ("corrupted", "clean")
    m_base, m_other, m_circ, kls = [], [], [], []
    for batch in batches:
        _, logits_base = capture(model, graph, batch.inputs(base))
        a_other, logits_other = capture(model, graph, batch.inputs(other))
        logits_c = patched_logits(model, graph, batch.inputs(base), a_other, keep)
        rows = torch.arange(len(batch.pos), device=batch.pos.device)
        m_base.append(logit_diff(logits_base, batch))
        m_other.append(logit_diff(logits_other, batch))
        m_circ.append(logit_diff(logits_c, batch))
        kls.append(_kl(logits_base[rows, batch.pos], logits_c[rows, batch.pos]))
    mb, mo, mc = (torch.cat(x).mean().item() for x in (m_base, m_other, m_circ))
    return dict(direction=direction, metric_full=mb, metric_other=mo, metric_circuit=mc,
                normalized=(mc - mo) / (mb - mo) if mb != mo else float("nan"), kl=torch.cat(kls).mean().item())


def sparsity(graph: Graph, keep: torch.Tensor) -> dict:
    """Edge sparsity 1 − |C|/|E|, node sparsity over heads and MLPs, and counts."""
    nodes = node_mask(graph, keep)
    n_nodes = len(graph.writers) - 1
    return dict(edges=int(keep.sum()), edge_sparsity=1 - int(keep.sum()) / graph.n_edges,
                nodes=int(nodes[1:].sum()), node_sparsity=1 - int(nodes[1:].sum()) / n_nodes)


def node_mask(graph: Graph, keep: torch.Tensor) -> torch.Tensor:
    """Writers that take part in the circuit (as a source, or fed by a kept receiver)."""
    return keep.any(1) | (target_matrix(graph) & keep.any(0)[:, None]).any(0)
