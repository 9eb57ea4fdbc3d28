"""Hook runtime on stock HF modules: capture writer activations, per-receiver gradients, and edge patching.

* :func:`capture` — one forward; every writer's activation ``[W, b, s, d]`` (fp32) and the logits.
* :func:`receiver_grads` — one forward + backward of a metric; also ``∂m/∂(input of receiver r)`` for every
  receiver ``[R, b, s, d]``. Gradients are taken at the norm's *output* side (projection outputs, MLP-norm
  output, final-norm output) and pulled back through that norm with a vmapped VJP, so that each receiver gets
  only its own path (the residual's own gradient would also contain the skip connection).
* :func:`patched_logits` — one forward in which receiver ``r`` reads
  ``x_r + Σ_{u → r not kept} (a_u(source) − a_u(current))``: edges outside the circuit carry the other run's
  activations. With every edge kept this is the plain run; with none kept it is the source run.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from .graph import Graph


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
    rows = torch.arange(len(batch.pos))
    at = logits[rows, batch.pos].float()
    return at[rows, batch.answer] - at[rows, batch.corrupted_answer]


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    """Accumulate in fp32, or in the model's dtype when it is wider (fp64 in exactness tests)."""
    return torch.promote_types(t.dtype, torch.float32)


def _hidden(args, kwargs) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _first(output):
    return output[0] if isinstance(output, tuple) else output


class _Writers:
    """Collects writer activations in computation order as the forward pass reaches them (kept in autograd's
    graph when ``detach`` is false, as Edge Pruning needs). With ``source`` (another run's activations), each
    chunk is stored as ``source − current`` instead: the difference that patching an edge adds."""

    def __init__(self, graph: Graph, *, detach: bool = True, source: torch.Tensor | None = None):
        self.graph = graph
        self.detach = detach
        self.source = source
        self.chunks: list[torch.Tensor] = []  # [k, b, s, d] blocks: input, heads of layer 0, MLP 0, ...
        self._n = 0
        self._cat: torch.Tensor | None = None

    def _add(self, t: torch.Tensor) -> None:
        t = t.detach() if self.detach else t
        t = t.to(_acc_dtype(t))
        if self.source is not None:
            t = self.source[self._n:self._n + len(t)] - t
        self._n += len(t)
        self.chunks.append(t)
        self._cat = None

    def prefix(self, n: int) -> torch.Tensor:
        """The first ``n`` writers' activations, ``[n, b, s, d]``."""
        if self._cat is None or len(self._cat) < n:
            self._cat = torch.cat(self.chunks)
        return self._cat[:n]

    @property
    def acts(self) -> torch.Tensor:
        return torch.cat(self.chunks)

    def hooks(self) -> list[tuple[nn.Module, str, Callable]]:
        g = self.graph
        out = []

        def on_input(module, args, kwargs):
            self._add(_hidden(args, kwargs)[None])

        out.append((g.first_layer, "pre_kw", on_input))
        for l, layer in enumerate(g.layers):
            def on_heads(module, args, l=l):
                self._add(g.head_outputs(l, args[0]))

            def on_mlp(module, args, output):
                self._add(_first(output)[None])

            out += [(layer.out_proj, "pre", on_heads), (layer.mlp, "fwd", on_mlp)]
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
def capture(model, graph: Graph, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    writers = _Writers(graph)
    with _installed(writers.hooks()):
        logits = model(**inputs).logits
    return writers.acts, logits


def norm_vjp(norm: nn.Module, x: torch.Tensor, cotangents: torch.Tensor) -> torch.Tensor:
    """Pull ``cotangents`` [R, b, s, d] at ``norm(x)``'s output back to its input (exact, one VJP per row)."""
    with torch.enable_grad():
        _, vjp_fn = torch.func.vjp(norm, x.detach())
        return torch.vmap(vjp_fn)(cotangents.to(x.dtype))[0].detach().to(_acc_dtype(x))


def receiver_grads(model, graph: Graph, inputs: dict[str, torch.Tensor],
                   metric: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Writer activations, ``∂ metric.sum() / ∂ receiver input`` for every receiver, and the logits."""
    writers = _Writers(graph)
    saved: dict[tuple, torch.Tensor] = {}  # ("x"|"g", kind, layer, [module index]) → tensor
    hooks = writers.hooks()

    def keep_grad(key):
        def hook(grad):
            saved[key] = grad.detach()
        return hook

    def save_input(key):
        def pre(module, args):
            saved[key] = args[0].detach()
        return pre

    def grad_of_output(key):
        def fwd(module, args, output):
            _first(output).register_hook(keep_grad(key))
        return fwd

    for l, layer in enumerate(graph.layers):
        hooks += [(layer.attn_norm, "pre", save_input(("x", "attn", l))),
                  (layer.mlp_norm, "pre", save_input(("x", "mlp", l))),
                  (layer.mlp_norm, "fwd", grad_of_output(("g", "mlp", l)))]
        hooks += [(proj, "fwd", grad_of_output(("g", "proj", l, i))) for i, proj in enumerate(layer.projections)]
    hooks += [(graph.final_norm, "pre", save_input(("x", "final"))),
              (graph.final_norm, "fwd", grad_of_output(("g", "final")))]
    with torch.enable_grad(), _installed(hooks):
        logits = model(**inputs).logits
        metric(logits).sum().backward()
    grads = []
    for l, layer in enumerate(graph.layers):
        module_index = {id(p): i for i, p in enumerate(layer.projections)}
        cot = torch.stack([saved[("g", "proj", l, module_index[id(r.module)])][..., r.cols] @ r.weight
                           for r in layer.receivers])
        grads.append(norm_vjp(layer.attn_norm, saved[("x", "attn", l)], cot))
        grads.append(norm_vjp(layer.mlp_norm, saved[("x", "mlp", l)], saved[("g", "mlp", l)][None]))
    grads.append(norm_vjp(graph.final_norm, saved[("x", "final")], saved[("g", "final")][None]))
    model.zero_grad(set_to_none=True)
    return writers.acts, torch.cat(grads), logits.detach()


def patched_logits(model, graph: Graph, inputs: dict[str, torch.Tensor], source: torch.Tensor,
                   keep: torch.Tensor) -> torch.Tensor:
    """Logits of the run on ``inputs`` where each edge ``u → r`` with ``keep[u, r] == False`` carries
    ``source[u]`` (the other run's writer activation) instead of the current one.

    ``keep`` is a ``[W, R]`` matrix over writers × receivers (entries that are not edges are ignored). A bool
    matrix patches edges fully; a float matrix in [0, 1] interpolates, ``keep = 1`` being the current run, and
    gradients flow to it when it requires grad (Edge Pruning trains such a mask). Without a mask that requires
    grad, the run is gradient-free.
    """
    with torch.set_grad_enabled(keep.requires_grad):
        return _patched(model, graph, inputs, source, keep)


def _patched(model, graph: Graph, inputs, source, keep) -> torch.Tensor:
    writers = _Writers(graph, detach=not keep.requires_grad, source=source)
    n_src = graph.n_sources
    drop = ~keep if keep.dtype == torch.bool else 1 - keep
    residual: dict[int, torch.Tensor] = {}
    recomputing: set[int] = set()
    hooks = writers.hooks()

    def delta(rs: list[int]) -> torch.Tensor | None:
        """Σ over dropped edges of (source − current), per receiver in ``rs`` → [len(rs), b, s, d] or None."""
        n = n_src[rs[0]]
        d = drop[:n, rs].T  # [len(rs), n]
        if not d.any():
            return None
        return torch.einsum("ru,ubsd->rbsd", d.to(source.dtype), writers.prefix(n))  # prefix = source − current

    receiver_ids = iter(range(len(n_src)))
    layer_receivers = []
    for layer in graph.layers:
        attn = [next(receiver_ids) for _ in layer.receivers]
        layer_receivers.append((attn, next(receiver_ids)))
    logits_receiver = next(receiver_ids)

    def save_input(l):
        def pre(module, args):
            if l not in recomputing:
                residual[l] = args[0]
        return pre

    def patch_projection(l, proj):
        attn, _ = layer_receivers[l]
        mine = [(r, spec) for r, spec in zip(attn, graph.layers[l].receivers) if spec.module is proj]

        def fwd(module, args, output):
            rs = [r for r, _ in mine]
            dlt = delta(rs)
            if dlt is None:
                return output
            x = residual[l]
            recomputing.add(l)  # this extra norm call must not overwrite residual[l]
            normed = graph.layers[l].attn_norm(x[None] + dlt.to(x.dtype))  # [len(rs), b, s, d]
            recomputing.discard(l)
            out = output.clone()
            for k, (r, spec) in enumerate(mine):
                if drop[: n_src[r], r].any():
                    y = normed[k] @ spec.weight.T
                    out[..., spec.cols] = y + spec.bias if spec.bias is not None else y
            return out
        return fwd

    def patch_norm_input(r):
        def pre(module, args):
            dlt = delta([r])
            if dlt is None:
                return None
            return (args[0] + dlt[0].to(args[0].dtype), *args[1:])
        return pre

    for l, layer in enumerate(graph.layers):
        hooks.append((layer.attn_norm, "pre", save_input(l)))
        hooks += [(proj, "fwd", patch_projection(l, proj)) for proj in layer.projections]
        hooks.append((layer.mlp_norm, "pre", patch_norm_input(layer_receivers[l][1])))
    hooks.append((graph.final_norm, "pre", patch_norm_input(logits_receiver)))
    with _installed(hooks):
        return model(**inputs).logits
