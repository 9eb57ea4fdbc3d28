"""Edge attribution patching in both directions ("EAP-dual"), registered by name.

For an edge ``u → r`` and the task metric ``m`` (logit of the answer minus logit of the corrupted answer at the
last prompt position; a KL-to-self metric would have zero gradient):

* noising   ``Ns[u, r] = Σ_{b,pos} (a_u(x̃) − a_u(x)) · ∂m/∂in_r |_x``  (clean base, corrupted activations in)
* denoising ``Dn[u, r] = Σ_{b,pos} (a_u(x) − a_u(x̃)) · ∂m/∂in_r |_x̃`` (corrupted base, clean activations in)

Both are first-order estimates of exact single-edge patching at their own base point; together they separate
AND-like inputs (large noising effect) from OR-like inputs (large denoising effect). Per batch, with weights
frozen: one gradient-free forward on the corrupted inputs (its writers), one forward+backward on the clean inputs
that records δ = a(x̃) − a(x) as the writers appear and adds δ · ∂m/∂in_r |_x layer by layer during the backward,
and one forward+backward on the corrupted inputs that adds −δ · ∂m/∂in_r |_x̃ the same way (7
forward-equivalents). Deltas are kept in the model's dtype; scores are accumulated in fp32 and averaged over
examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from tqdm.auto import tqdm

from ..registry import Registry

if TYPE_CHECKING:  # annotations only: importing this module does not import torch
    import torch
    from .graph import Graph
    from .runtime import Batch

METHODS: Registry[Callable[..., "Attribution"]] = Registry("circuit method")


def method_options(circuits: dict[str, Any]) -> dict[str, Any]:
    """The options of the configured method, from the config's ``circuits`` section."""
    return {"eap_ig": {"ig_steps": circuits.get("ig_steps", 5)},
            "edge_pruning": dict(circuits.get("edge_pruning", {}))}.get(circuits.get("method", "eap_dual"), {})


@dataclass
class Attribution:
    noising: torch.Tensor  # [W, R] fp32 on the CPU, mean over examples; entries that are not edges are 0
    denoising: torch.Tensor
    n_examples: int
    forward_equivalents: int  # forward-pass equivalents spent (a backward counts as two)


@METHODS.register("eap_dual")
def eap_dual(model, graph: Graph, batches: Iterable[Batch], *, desc: str = "eap_dual", **_) -> Attribution:
    import torch
    from ..devices import model_device
    from .runtime import attribute, capture, frozen, logit_diff
    W, R = len(graph.writers), len(graph.receivers)
    ns, dn = (torch.zeros(W, R, device=model_device(model)) for _ in range(2))
    n = passes = 0
    with frozen(model):
        for batch in tqdm(list(batches), desc=desc, unit="batch", leave=False):
            metric = lambda logits: logit_diff(logits, batch)  # noqa: E731
            corrupted, _ = capture(model, graph, batch.inputs("corrupted"))
            delta, _ = attribute(model, graph, batch.inputs("clean"), metric, ns, source=corrupted, mask=batch.mask)
            del corrupted
            attribute(model, graph, batch.inputs("corrupted"), metric, dn, deltas=delta.neg_())
            n += len(batch.pos)
            passes += (1 + 2 * 3) * len(batch.pos)
    return Attribution((ns / max(n, 1)).cpu(), (dn / max(n, 1)).cpu(), n, passes)


@METHODS.register("eap_ig")
def eap_ig(model, graph: Graph, batches: Iterable[Batch], *, ig_steps: int = 5, desc: str = "eap_ig",
           **_) -> Attribution:
    """EAP-IG (Hanna et al. 2024): gradients averaged over ``ig_steps`` points on the straight line between the
    clean and the corrupted input embeddings. The path is symmetric, so the denoising score is the noising score
    with its sign flipped: both circuits coincide and every edge is labelled ADDER. Use it for one faithful
    circuit, not for AND/OR labels. Cost per example: 2 forwards + 3 per step."""
    import torch
    from ..devices import model_device
    from .runtime import attribute, capture, frozen, logit_diff
    W, R = len(graph.writers), len(graph.receivers)
    ns = torch.zeros(W, R, device=model_device(model))
    n = passes = 0
    embed = model.get_input_embeddings()
    with frozen(model):
        for batch in tqdm(list(batches), desc=desc, unit="batch", leave=False):
            metric = lambda logits: logit_diff(logits, batch)  # noqa: E731
            corrupted, _ = capture(model, graph, batch.inputs("corrupted"))
            delta, _ = capture(model, graph, batch.inputs("clean"), source=corrupted, mask=batch.mask)
            del corrupted
            with torch.no_grad():
                e_x, e_c = embed(batch.clean), embed(batch.corrupted)
            for k in range(1, ig_steps + 1):  # the GEMM is linear in the gradient: summing scores sums gradients
                point = {"inputs_embeds": e_x + (k / ig_steps) * (e_c - e_x), "attention_mask": batch.mask}
                attribute(model, graph, point, metric, ns, deltas=delta)
            n += len(batch.pos)
            passes += (2 + 3 * ig_steps) * len(batch.pos)
    ns = (ns / (max(n, 1) * ig_steps)).cpu()
    return Attribution(ns, -ns, n, passes)


# hard-concrete distribution (Louizos et al. 2018), as in Edge Pruning
_BETA, _GAMMA, _ZETA = 2 / 3, -0.1, 1.1


def _hard_concrete(log_alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    import torch
    u = torch.rand(log_alpha.shape, generator=generator).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((u.log() - (1 - u).log() + log_alpha) / _BETA)
    return (s * (_ZETA - _GAMMA) + _GAMMA).clamp(0, 1)


def _kl_at_answer(full_logprobs: torch.Tensor, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    import torch
    rows = torch.arange(len(batch.pos), device=batch.pos.device)
    lq = torch.log_softmax(logits[rows, batch.pos].float(), -1)
    return (full_logprobs.exp() * (full_logprobs - lq)).sum(-1).mean()


@METHODS.register("edge_pruning")
def edge_pruning(model, graph: Graph, batches: Iterable[Batch], *, edge_fraction: float = 0.05,
                 steps: int = 100, lr: float = 0.1, lambda_lr: float = 0.01, warmup: float = 0.5, seed: int = 0,
                 desc: str = "edge_pruning",
                 **_) -> Attribution:
    """Edge Pruning (Bhaskar et al. 2024) run twice on the same patching code: a hard-concrete mask per edge
    minimises KL(full ‖ circuit) at the answer position, with a Lagrangian pushing the expected density to
    ``edge_fraction`` (linear warm-up over the first ``warmup`` of the steps). Noising: clean base, edges outside
    the mask carry corrupted activations. Denoising (bounded, as in the logical-gates paper): corrupted base,
    outside edges carry clean activations, KL to the corrupted run. Scores are the final mask probabilities."""
    import torch
    from .runtime import capture, frozen, patched_logits
    from .select import edge_mask

    batches = list(batches)
    edges = edge_mask(graph)
    gen = torch.Generator().manual_seed(seed)
    out, passes = {}, 0
    with frozen(model):
        for direction, (base, other) in {"noising": ("clean", "corrupted"),
                                         "denoising": ("corrupted", "clean")}.items():
            cache = []
            for b in batches:
                _, full = capture(model, graph, b.inputs(base))
                source, _ = capture(model, graph, b.inputs(other))
                rows = torch.arange(len(b.pos), device=b.pos.device)
                cache.append((source, torch.log_softmax(full[rows, b.pos].float(), -1)))
                passes += 2 * len(b.pos)
            log_alpha = torch.full(edges.shape, 3.0, requires_grad=True)
            lambdas = torch.zeros(2, requires_grad=True)
            opt = torch.optim.Adam([{"params": [log_alpha], "lr": lr}, {"params": [lambdas], "lr": lambda_lr}])
            for step in tqdm(range(steps), desc=f"{desc} {direction}", unit="step", leave=False):
                b = batches[step % len(batches)]
                source, full_logprobs = cache[step % len(batches)]
                z = torch.where(edges, _hard_concrete(log_alpha, gen), torch.ones(()))
                kl = _kl_at_answer(full_logprobs, patched_logits(model, graph, b.inputs(base), source, z), b)
                density = torch.sigmoid(log_alpha - _BETA * torch.log(torch.tensor(-_GAMMA / _ZETA)))[edges].mean()
                target = 1 - (1 - edge_fraction) * min(1.0, (step + 1) / max(1, warmup * steps))
                gap = density - target
                loss = kl + lambdas[0] * gap + lambdas[1] * gap**2
                opt.zero_grad()
                loss.backward()
                lambdas.grad.neg_()  # the multipliers ascend
                opt.step()
                passes += 3 * len(b.pos)
            out[direction] = torch.sigmoid(log_alpha.detach()) * edges
    return Attribution(out["noising"], out["denoising"], sum(len(b.pos) for b in batches), passes)
