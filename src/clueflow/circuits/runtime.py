"""Hook runtime on stock HF modules: writer activations, edge attribution streamed through the backward pass,
and edge patching.

* :class:`Writers` — every writer's activation of one run (or a difference of two runs), in the model's dtype and
  compact, one :class:`Group` per tensor: the input and each MLP as ``[b, s, d]``, each layer's heads as the output
  projection's input ``z`` ``[b, s, H·hd]`` (an MLP split into neuron blocks likewise, as the down projection's
  input), a MoE layer's experts as ``[b, s, E, d]``. A head's contribution ``z_h @ W_O[h]`` is linear in ``z_h``,
  so it is expanded to ``[H, ·, d]`` (in fp32) only where it is used, a token chunk at a time: d/hd times less
  memory for the heads. Behind a post-norm (Gemma, OLMo-2) a group also keeps the norm's per-token factor of its
  run, and a difference of two runs keeps both runs' terms.
* :func:`capture` — one gradient-free forward; the writers (or ``(source − writers) · mask``) and the logits.
* :func:`attribute` — one forward + backward of a metric that adds ``Σ_{b,s} δ_u · ∂m/∂(input of r)`` to
  ``scores[u, r]`` for every edge, layer by layer *inside* the backward pass: as soon as a layer's receiver
  gradients exist they are multiplied (fp32 GEMM) with the stored deltas of the writers upstream and dropped, so
  at most one layer's receiver gradients are alive. Gradients are taken at the norm's *output* side (projection
  outputs — q/k/v, and a neuron block's gate/up rows —, MLP-norm output, final-norm output) and pulled back
  through that norm with a vmapped VJP, so that each receiver gets only its own path (the residual's own gradient
  would also contain the skip connection). A block that reads the residual without a norm (OLMo-2) is given a
  passthrough node for the same purpose.
* :func:`patched_logits` — one forward in which receiver ``r`` reads
  ``x_r + Σ_{u → r not kept} (a_u(source) − a_u(current))``: edges outside the circuit carry the other run's
  activations. With every edge kept this is the plain run; with none kept it is the source run.
* :func:`frozen` — weights stop requiring grad (restored after), so backward passes build no weight gradients.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from .. import anatomy
from .graph import Graph

# fp32 elements of one expanded head chunk [H, tokens, d] (256 MiB): bounds the transient memory of the GEMMs
_CHUNK_ELEMENTS = 2**26
_VJP_CHUNK = 16  # receivers per vmapped norm VJP


@dataclass
class Batch:
    """Token-aligned clean/corrupted pairs, right-padded; the metric reads position ``pos``."""

    clean: torch.Tensor  # [b, s] input ids
    corrupted: torch.Tensor  # [b, s]
    mask: torch.Tensor  # [b, s] attention mask (same for both: the pairs are token-aligned)
    pos: torch.Tensor  # [b] index of the last prompt token
    answer: torch.Tensor  # [b] first token of the answer
    corrupted_answer: torch.Tensor  # [b] first token of the corrupted answer

    def inputs(self, which: str) -> dict[str, torch.Tensor]:
        return {"input_ids": self.clean if which == "clean" else self.corrupted, "attention_mask": self.mask}

    def to(self, device: torch.device | str) -> "Batch":
        """The same batch with every tensor on ``device`` (where the model is)."""
        return Batch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))


def logit_diff(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per example: logit(answer) − logit(corrupted answer) at the last prompt position, in fp32."""
    rows = torch.arange(len(batch.pos), device=batch.pos.device)
    at = logits[rows, batch.pos].float()
    return at[rows, batch.answer] - at[rows, batch.corrupted_answer]


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    """Accumulate in fp32, or in the model's dtype when it is wider (fp64 in exactness tests)."""
    return torch.promote_types(t.dtype, torch.float32)


def _hidden(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _first(output):
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Inside, no weight requires grad (restored after, also on error): backward passes compute input-gradients
    only and never allocate a weight ``.grad``."""
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@dataclass
class Group:
    """The writers of one tensor group, as ``Σ_k sign_k · scale_k ⊙ expand(act_k)``: ``act`` is the input
    ``[b, s, d]``, a layer's heads as the output projection's input ``z`` ``[b, s, H·hd]``, a dense MLP's output
    ``[b, s, d]``, its neuron blocks as the output projection's input ``[b, s, I]``, or a MoE layer's expert outputs
    ``[b, s, E, d]``; ``scale`` [b, s, d] (fp32) is a post-norm's
    factor on the run the activation comes from (None: no post-norm). One term holds one run; a difference of
    two runs is one term where neither has a post-norm (subtracted in fp32, stored in the model's dtype), and two
    terms where they do."""

    kind: str  # "input" | "heads" | "mlp" | "experts" | "blocks"
    layer: int | None
    terms: list[tuple[torch.Tensor, torch.Tensor | None]]
    signs: list[float]

    def neg_(self) -> "Group":
        self.signs = [-s for s in self.signs]
        return self

    def diff(self, current: "Group", mask: torch.Tensor | None) -> "Group":
        """``self − current`` (one run each), with padding (``mask`` [b, s] false) zeroed."""
        (s, s_scale), (c, c_scale) = self.terms[0], current.terms[0]
        m = None if mask is None else mask.reshape(*mask.shape, *[1] * (c.dim() - 2))
        if s_scale is None and c_scale is None:
            t = (s.to(_acc_dtype(c)) - c.to(_acc_dtype(c))).to(c.dtype)
            return Group(self.kind, self.layer, [(t if m is None else t * m.to(t.dtype), None)], [1.0])
        m = None if mask is None else mask[..., None].to(torch.float32)
        terms = [(a, sc if m is None else sc * m) for a, sc in ((s, s_scale), (c, c_scale))]
        return Group(self.kind, self.layer, terms, [1.0, -1.0])

    def contributions(self, graph: Graph, acc: torch.dtype, lo: int = 0, hi: int | None = None) -> torch.Tensor:
        """Per-writer residual contributions of the tokens ``lo:hi`` (batch and sequence flattened) →
        ``[writers, 1, tokens, d]``, in ``acc``."""
        out = None
        for (act, scale), sign in zip(self.terms, self.signs):
            a = act.flatten(0, 1)[None, lo:hi].to(acc)  # [1, tokens, ·]
            if self.kind in ("heads", "blocks"):  # z → z_h @ W_O[h]; neuron activations → their down columns' share
                heads = self.kind == "heads"
                layer = graph.layers[self.layer]
                c = (graph.head_outputs if heads else graph.block_outputs)(self.layer, a)
                bias = (layer.out_proj if heads else layer.mlp_out).bias
                if scale is not None and bias is not None:
                    c = c + bias.to(acc) / len(c)  # inside the norm: shared out
            elif self.kind == "experts":  # [1, tokens, E, d]
                c = a.permute(2, 0, 1, 3)
            else:
                c = a[None]
            if scale is not None:
                c = c * scale.flatten(0, 1)[None, None, lo:hi].to(acc)
            c = c if sign == 1 else c * sign
            out = c if out is None else out + c
        return out


class Writers:
    """Writer activations in computation order, one :class:`Group` per tensor: group 0 the input, group
    ``2l + 1`` the heads of layer ``l``, group ``2l + 2`` its MLP (or experts)."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.groups: list[Group] = []

    def bounds(self, i: int) -> tuple[int, int]:
        """The writers ``[start, stop)`` of group ``i``."""
        if i == 0:
            return 0, 1
        l, is_mlp = divmod(i - 1, 2)
        start = self.graph.writers_before_layer(l) + (self.graph.n_heads if is_mlp else 0)
        return start, start + (self.graph.mlp_writers(l) if is_mlp else self.graph.n_heads)

    def groups_before(self, n: int) -> Iterator[tuple[int, int, int]]:
        """``(group, start, stop)`` of the groups that make up the first ``n`` writers."""
        for i in range(len(self.groups)):
            start, stop = self.bounds(i)
            if stop > n:
                return
            yield i, start, stop

    def neg_(self) -> "Writers":
        for g in self.groups:
            g.neg_()
        return self

    def hooks(self, *, source: "Writers | None" = None, mask: torch.Tensor | None = None,
              detach: bool = True) -> list[tuple[nn.Module, str, Callable]]:
        """Hooks that append each group as the forward pass reaches it: the activation (kept in autograd's graph
        when ``detach`` is false, as Edge Pruning needs), or with ``source`` (another run's writers)
        ``(source − activation) · mask`` (``mask`` [b, s] zeroes padding)."""
        g = self.graph
        held: dict[int, torch.Tensor] = {}  # a layer's head or expert activations waiting for their post-norm

        def keep(t: torch.Tensor) -> torch.Tensor:
            return t.detach() if detach else t

        def add(kind: str, layer: int | None, act: torch.Tensor, scale: torch.Tensor | None = None) -> None:
            group = Group(kind, layer, [(keep(act), None if scale is None else keep(scale))], [1.0])
            if source is not None:
                group = source.groups[len(self.groups)].diff(group, mask)
            self.groups.append(group)

        def at(kind: str, l: int, module: nn.Module, how: str, get: Callable, post) -> list:
            """Hooks that add group ``kind`` of layer ``l`` from ``get(*hook args)`` at ``module`` — with a
            post-norm, once the norm has run, with its factor on this run."""
            if post is None:
                return [(module, how, lambda *a: add(kind, l, get(*a)))]
            return [(module, how, lambda *a: held.__setitem__(l, get(*a))),
                    (post.module, "fwd", lambda m, args, output: add(kind, l, held.pop(l), post.scale(args[0])))]

        proj_input = lambda module, args: args[0]  # noqa: E731  (z of the heads, a block's neuron activations)
        out = [(g.first_layer, "pre_kw", lambda module, args, kwargs: add("input", None, _hidden(args, kwargs)))]
        for l, layer in enumerate(g.layers):
            out += at("heads", l, layer.out_proj, "pre", proj_input, layer.attn_post)
            if layer.n_experts:  # [b, s, E, d]
                out += at("experts", l, layer.mlp, "fwd", lambda module, args, output, layer=layer:
                          layer.expert_outputs(args[0]).permute(1, 2, 0, 3), layer.mlp_post)
            elif g.split(l):  # neuron blocks: the output projection's input, as heads
                out += at("blocks", l, layer.mlp_out, "pre", proj_input, layer.mlp_post)
            else:  # a dense MLP is one writer: what enters the residual, after the post-norm if there is one
                site = layer.mlp if layer.mlp_post is None else layer.mlp_post.module
                out.append((site, "fwd", lambda module, args, output, l=l: add("mlp", l, _first(output))))
        return out


def _routes(graph: Graph) -> list[tuple[nn.Module, str, Callable]]:
    """For blocks that read the residual directly (their norm a passthrough): a pre-hook that sends the block's
    input through the passthrough, so that the norm hooks of the runtime apply to it as to a real norm."""
    out = []
    for layer in graph.layers:
        if anatomy.is_passthrough(layer.attn_norm):
            def attn(module, args, kwargs, norm=layer.attn_norm):
                if args:
                    return (norm(args[0]), *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": norm(kwargs["hidden_states"])}
            out.append((layer.attn, "pre_kw", attn))
        if anatomy.is_passthrough(layer.mlp_norm):
            out.append((layer.mlp, "pre", lambda module, args, norm=layer.mlp_norm: (norm(args[0]), *args[1:])))
    return out


@contextlib.contextmanager
def _installed(hooks: list[tuple[nn.Module, str, Callable]]) -> Iterator[None]:
    handles = []
    try:
        for module, kind, fn in hooks:
            if kind == "pre":
                handles.append(module.register_forward_pre_hook(fn))
            elif kind == "pre_kw":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def capture(model, graph: Graph, inputs: dict[str, torch.Tensor], *, source: Writers | None = None,
            mask: torch.Tensor | None = None) -> tuple[Writers, torch.Tensor]:
    """One gradient-free forward: its writers (``(source − writers) · mask`` with ``source``) and its logits."""
    writers = Writers(graph)
    with _installed(writers.hooks(source=source, mask=mask)):
        logits = model(**inputs).logits
    return writers, logits


def _receiver_ids(graph: Graph) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Per layer (its attention receivers' indices, its MLP receivers' indices), and the logits receiver's."""
    ids = iter(range(len(graph.n_sources)))
    layers = []
    for l, layer in enumerate(graph.layers):
        attn = [next(ids) for _ in layer.receivers]
        layers.append((attn, [next(ids) for _ in range(graph.mlp_blocks if graph.split(l) else 1)]))
    return layers, next(ids)


def _read_sites(graph: Graph) -> list[tuple[tuple, nn.Module, list[int], list[list]]]:
    """Norms whose receivers read through projection slices: ``(key, norm, receiver ids, each receiver's
    slices)`` — every attention norm, and the MLP norm of a layer split into neuron blocks (gate and up rows)."""
    layer_ids, _ = _receiver_ids(graph)
    out = []
    for l, layer in enumerate(graph.layers):
        out.append((("attn", l), layer.attn_norm, layer_ids[l][0], [[r] for r in layer.receivers]))
        if graph.split(l):
            out.append((("mlp", l), layer.mlp_norm, layer_ids[l][1], graph.mlp_receiver_parts(l)))
    return out


def _modules(parts: list[list]) -> list[nn.Module]:
    """The distinct modules that slices read from, in order."""
    seen: dict[int, nn.Module] = {}
    for ps in parts:
        for p in ps:
            seen.setdefault(id(p.module), p.module)
    return list(seen.values())


def norm_vjp(norm: nn.Module, x: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
    """Pull ``cotangents`` [R, b, s, d] at ``norm(x)``'s output back to its input (exact, one VJP per row),
    in ``x``'s dtype."""
    with torch.enable_grad():
        _, vjp_fn = torch.func.vjp(norm, x.detach())
        return torch.vmap(vjp_fn, chunk_size=_VJP_CHUNK)(cotangents.to(x.dtype))[0].detach()


def _add_scores(scores: torch.Tensor, deltas: Writers, pending: list[tuple[list[int], torch.Tensor]]) -> None:
    """``scores[u, r] += Σ_{tokens, d} δ_u · grad_r`` for the pending receivers ``r`` and every writer ``u``
    upstream of each, by token chunks and writer groups: fp32 GEMMs, each head group expanded once per call."""
    n_src = deltas.graph.n_sources
    rs = [r for ids, _ in pending for r in ids]
    order = sorted(range(len(rs)), key=lambda j: -n_src[rs[j]])  # widest prefix first: a group's receivers lead
    rs = [rs[j] for j in order]
    perm = torch.tensor(order, device=scores.device)
    grads = [g.flatten(1, 2) for _, g in pending]  # [k, tokens, d]
    n_tokens, d = grads[0].shape[1:]
    step = max(1, _CHUNK_ELEMENTS // (max(deltas.graph.n_heads, *map(deltas.graph.mlp_writers,
                                                                      range(deltas.graph.n_layers))) * d))
    acc = _acc_dtype(grads[0])
    for lo in range(0, n_tokens, step):
        g = torch.cat([x[:, lo:lo + step] for x in grads]).to(acc)[perm].flatten(1)  # [K, chunk·d]
        for i, start, stop in deltas.groups_before(n_src[rs[0]]):
            k = sum(n_src[r] >= stop for r in rs)
            a = deltas.groups[i].contributions(deltas.graph, acc, lo, lo + step).flatten(1)  # [writers, chunk·d]
            scores[start:stop, rs[:k]] += a @ g[:k].T
    pending.clear()


def attribute(model, graph: Graph, inputs: dict[str, torch.Tensor], metric: Callable[[torch.Tensor], torch.Tensor],
              scores: torch.Tensor, *, deltas: Writers | None = None, source: Writers | None = None,
              mask: torch.Tensor | None = None) -> tuple[Writers, torch.Tensor]:
    """One forward + backward of ``metric(logits).sum()`` that adds ``Σ_{b,s} δ_u · ∂m/∂(input of r)`` into
    ``scores`` [W, R] for every edge ``u → r``. ``δ`` is ``deltas``, or with ``source``, ``(source − this run's
    writers) · mask`` recorded during the forward. Call it inside :func:`frozen`; the layer-0 input is made to
    require grad so that input-gradients flow. Returns ``δ`` and the logits."""
    hooks = []
    if deltas is None:
        deltas = Writers(graph)
        hooks += deltas.hooks(source=source, mask=mask)
    layer_ids, logits_id = _receiver_ids(graph)
    x_in: dict[tuple, torch.Tensor] = {}  # norm inputs, by ("attn" | "mlp", l) or ("final",)
    g_proj: dict[tuple[int, int], torch.Tensor] = {}  # projection-output gradients of the layer in backward
    pending: list[tuple[list[int], torch.Tensor]] = []  # receivers whose gradients wait for their GEMM

    def requires_grad(module, args, kwargs):
        h = _hidden(args, kwargs)
        if h.requires_grad:
            return None
        h = h.detach().requires_grad_()
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    def save_input(key):
        def pre(module, args):
            x_in[key] = args[0].detach()
        return pre

    def on_grad(make_hook):
        def fwd(module, args, output):
            _first(output).register_hook(make_hook())
        return fwd

    def single_receiver(key, norm, r):
        """The MLP or logits receiver: its norm-output gradient pulled back, queued for the next GEMM."""
        def hook(grad):
            pending.append(([r], norm_vjp(norm, x_in.pop(key), grad[None])))
        return lambda: hook

    def read_receivers(key, norm, ids, parts):
        """Fires once every projection read at this norm has its gradient: each receiver's cotangent (the sum over
        its slices) pulled back through the norm and queued; at an attention norm (the last of its layer in the
        backward), the GEMM of all queued receivers against the stored deltas."""
        index = {id(m): i for i, m in enumerate(_modules(parts))}

        def hook(grad):
            cot = []
            for ps in parts:
                t = g_proj[key, index[id(ps[0].module)]][..., ps[0].cols] @ ps[0].weight
                for p in ps[1:]:
                    t = t + g_proj[key, index[id(p.module)]][..., p.cols] @ p.weight
                cot.append(t)
            for i in range(len(index)):
                del g_proj[key, i]
            pending.append((ids, norm_vjp(norm, x_in.pop(key), torch.stack(cot))))
            if key[0] == "attn":
                _add_scores(scores, deltas, pending)
        return lambda: hook

    def keep_grad(key, i):
        def hook(grad):
            g_proj[key, i] = grad.detach()
        return lambda: hook

    hooks += [(graph.first_layer, "pre_kw", requires_grad), *_routes(graph)]
    for l, layer in enumerate(graph.layers):
        hooks += [(layer.attn_norm, "pre", save_input(("attn", l))), (layer.mlp_norm, "pre", save_input(("mlp", l)))]
        if not graph.split(l):
            hooks.append((layer.mlp_norm, "fwd", on_grad(single_receiver(("mlp", l), layer.mlp_norm,
                                                                         layer_ids[l][1][0]))))
    for key, norm, ids, parts in _read_sites(graph):
        hooks.append((norm, "fwd", on_grad(read_receivers(key, norm, ids, parts))))
        hooks += [(m, "fwd", on_grad(keep_grad(key, i))) for i, m in enumerate(_modules(parts))]
    hooks += [(graph.final_norm, "pre", save_input(("final",))),
              (graph.final_norm, "fwd", on_grad(single_receiver(("final",), graph.final_norm, logits_id)))]
    with torch.enable_grad():
        with _installed(hooks):
            logits = model(**inputs).logits
        metric(logits).sum().backward()  # without the forward hooks: the norm VJPs call the norms again
    if pending:  # a receiver whose gradient arrived after the last layer's GEMM (parallel residual)
        _add_scores(scores, deltas, pending)
    return deltas, logits.detach()


def patched_logits(model, graph: Graph, inputs: dict[str, torch.Tensor], source: Writers,
                   keep: torch.Tensor) -> torch.Tensor:
    """Logits of the run on ``inputs`` where each edge ``u → r`` with ``keep[u, r] == False`` carries
    ``source``'s writer ``u`` (the other run's activation) instead of the current one.

    ``keep`` is a ``[W, R]`` matrix over writers × receivers (entries that are not edges are ignored). A bool
    matrix patches edges fully; a float matrix in [0, 1] interpolates, ``keep = 1`` being the current run, and
    gradients flow to it when it requires grad (Edge Pruning trains such a mask). Without a mask that requires
    grad, the run is gradient-free. Weights are frozen throughout.
    """
    with frozen(model), torch.set_grad_enabled(keep.requires_grad):
        return _patched(model, graph, inputs, source, keep)


def _patched(model, graph: Graph, inputs, source: Writers, keep) -> torch.Tensor:
    current = Writers(graph)
    hooks = current.hooks(detach=not keep.requires_grad) + _routes(graph)
    n_src = graph.n_sources
    drop = (~keep if keep.dtype == torch.bool else 1 - keep).to(source.groups[0].terms[0][0].device)
    dropped = (drop != 0).cpu()  # which edges are dropped, read on the host once: not one device sync per receiver
    normed: dict[tuple, dict[int, torch.Tensor]] = {}  # norm site → {receiver: norm(x + its delta)}
    recomputing: set[tuple] = set()

    def delta(rs: list[int]) -> torch.Tensor:
        """Σ over dropped edges of (source − current), per receiver in ``rs`` (same prefix) → [len(rs), b, s, d]."""
        out = 0
        for i, start, stop in current.groups_before(n_src[rs[0]]):
            if dropped[start:stop, rs].any():
                d = drop[start:stop, rs]
                s, c = source.groups[i], current.groups[i]
                acc = _acc_dtype(c.terms[0][0])
                b, n = c.terms[0][0].shape[:2]
                if s.terms[0][1] is None and c.terms[0][1] is None:  # no post-norm: expand the difference once
                    diff = Group(c.kind, c.layer, [(s.terms[0][0].to(acc) - c.terms[0][0].to(acc), None)], [1.0])
                    u = diff.contributions(graph, acc)
                else:
                    u = s.contributions(graph, acc) - c.contributions(graph, acc)
                out = out + torch.einsum("ur,ubsd->rbsd", d.to(acc), u.reshape(len(u), b, n, -1))
        return out

    layer_ids, logits_id = _receiver_ids(graph)

    def patch_norm(key, ids):
        """At a norm whose receivers read through projection slices: the norm of ``x + delta`` for each receiver
        with a dropped edge, kept for the projections' hooks."""
        def fwd(module, args, output):
            if key in recomputing:
                return
            rs = [r for r in ids if dropped[:n_src[r], r].any()]
            normed[key] = {}
            if rs:
                x = args[0]
                recomputing.add(key)  # this extra norm call must not patch itself
                normed[key] = dict(zip(rs, module(x[None] + delta(rs).to(x.dtype))))
                recomputing.discard(key)
            return
        return fwd

    def patch_projection(key, ids, parts, proj):
        mine = [(r, p) for r, ps in zip(ids, parts) for p in ps if p.module is proj]

        def fwd(module, args, output):
            todo = [(normed[key][r], p) for r, p in mine if r in normed[key]]
            if not todo:
                return output
            out = output.clone()
            for x, p in todo:
                y = x @ p.weight.T
                out[..., p.cols] = y + p.bias if p.bias is not None else y
            return out
        return fwd

    def patch_norm_input(r):
        def pre(module, args):
            if not dropped[:n_src[r], r].any():
                return None
            return (args[0] + delta([r])[0].to(args[0].dtype), *args[1:])
        return pre

    for key, norm, ids, parts in _read_sites(graph):
        hooks.append((norm, "fwd", patch_norm(key, ids)))
        hooks += [(m, "fwd", patch_projection(key, ids, parts, m)) for m in _modules(parts)]
    for l, layer in enumerate(graph.layers):
        if not graph.split(l):
            hooks.append((layer.mlp_norm, "pre", patch_norm_input(layer_ids[l][1][0])))
    hooks.append((graph.final_norm, "pre", patch_norm_input(logits_id)))
    with _installed(hooks):
        return model(**inputs).logits
