"""Shared by the gradient- and attribution-based localizers: data-set gradients and MLP-neuron integrated
gradients. (Registers no method.)"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from tqdm.auto import tqdm

from ... import anatomy

if TYPE_CHECKING:  # annotations only: importing this module does not import torch
    import torch
    from torch import nn
    from ...circuits.graph import Graph
    from ..batches import Batches


def neuron_columns(graph: Graph, layer: int, neurons: torch.Tensor) -> torch.Tensor:
    """Mask of ``neurons``' output weights (the input features of the layer's MLP output projection)."""
    import torch
    out = graph.mlp_outs("neuron masks")[layer]
    mask = torch.zeros(out.weight.shape, dtype=torch.bool)
    mask[anatomy.input_index(out, neurons.cpu())] = True
    return mask


def gradient_stream(model: nn.Module, params: dict[str, nn.Parameter], batches: Batches, *, batch_size: int,
                    per_example: str = "mean") -> Iterator[tuple[str, torch.Tensor]]:
    """Gradient of Σ over examples of each example's token NLL, its mean over the example's labelled tokens
    (``per_example="mean"``) or their sum (``"sum"``: minus the sequence log-probability NPO is built on), for
    ``params`` only: (name, gradient) one parameter at a time, in the model's dtype. Per-example terms make it
    independent of ``batch_size`` (examples per forward pass) up to float rounding. Each gradient is handed over,
    not copied (a consumer that scores tensor by tensor never holds a second full set)."""
    import torch
    from ..losses import token_logprobs
    if per_example not in ("mean", "sum"):
        raise ValueError(f"per_example must be mean or sum, not {per_example!r}")
    wanted = {id(p) for p in params.values()}
    for p in model.parameters():
        p.requires_grad_(id(p) in wanted)
        p.grad = None
    try:
        for b in batches.in_order(batch_size):
            lp, mask = token_logprobs(model(input_ids=b.input_ids, attention_mask=b.attention_mask,
                                            use_cache=False).logits, b.labels)
            per = -lp.sum(-1)
            (per / mask.sum(-1).clamp_min(1) if per_example == "mean" else per).sum().backward()
        for n, p in params.items():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            p.grad = None
            yield n, g.detach()
    finally:
        for p in model.parameters():
            p.grad = None
            p.requires_grad_(True)


def gradients(model: nn.Module, params: dict[str, nn.Parameter], batches: Batches, *, batch_size: int,
              per_example: str = "mean") -> dict[str, torch.Tensor]:
    """:func:`gradient_stream` gathered into a dict."""
    return dict(gradient_stream(model, params, batches, batch_size=batch_size, per_example=per_example))


def _targets(batch, answer: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attribution targets as (row, position predicting the token, token): each row's first labelled token
    (``answer="first"``) or every labelled token (``"all"``: each its own next-token sample, q ⊕ a_<t → a_t)."""
    import torch
    from ..losses import IGNORE
    labelled = batch.labels != IGNORE
    if answer == "first":
        first = labelled.float().argmax(1)
        rows = torch.arange(len(first), device=first.device)
        return rows, first - 1, batch.labels[rows, first]
    if answer != "all":
        raise ValueError(f"answer must be first or all, not {answer!r}")
    rows, at = labelled.nonzero(as_tuple=True)
    return rows, at - 1, batch.labels[rows, at]


def neuron_ig(model: nn.Module, graph: Graph, batches: Batches, *, batch_size: int, steps: int = 8,
              target: str = "prob", answer: str = "first", per_layer: bool = False, per_example: bool = False
              ) -> list[torch.Tensor]:
    """Integrated gradients of each MLP neuron (input coordinate of the MLP output projection) at the position
    predicting an answer token: β · (1/m) Σ_j ∂f/∂a |_{a = (j/m) β}, with f the token's probability (DEPN) or
    log-probability (SIMU's −loss, so supporting neurons score positive), the baseline zero activation at that
    position only. Per layer, summed over examples ([d_ff]), or per example (``per_example``: [examples, d_ff],
    rows in ``batches.items`` order).

    ``answer``: the first answer token, or every one (``all``) as its own sample (its row repeated, its own
    position scaled), their attributions summed per example. ``per_layer=False`` moves all layers' activations
    along the path together (one backward per step): all neurons' attributions sum to f(β) − f(0) up to the
    Riemann error. ``per_layer=True`` is Knowledge Neurons' and DEPN's protocol: one layer scaled at a time, the
    others clean (L times the passes); each layer's attributions sum to f(β) − f(β with that layer's activation
    zeroed). Every term is per sample, so ``batch_size`` (examples per forward pass) changes only float rounding.
    """
    import torch
    outs = graph.mlp_outs("neuron attribution (DEPN, SIMU)")
    totals: list[torch.Tensor | None] = [None] * len(outs)
    groups = [[l] for l in range(len(outs))] if per_layer else [list(range(len(outs)))]
    for p in model.parameters():
        p.requires_grad_(False)
    bar = tqdm(total=-(-len(batches.items) // batch_size) * len(groups) * steps, desc="integrated gradients",
               unit="pass", leave=False)
    try:
        for b in batches.in_order(batch_size):
            rows, pos, tok = _targets(b, answer)
            ids, att = b.input_ids[rows], b.attention_mask[rows]  # one sample (row) per target
            sample = torch.arange(len(rows), device=rows.device)
            clean: dict[int, torch.Tensor] = {}
            replace: dict[int, torch.Tensor] = {}

            def hook(l):
                def pre(module, args):
                    x = args[0]
                    if l in replace:
                        x = x.clone()
                        x[sample, pos] = replace[l].to(x.dtype)
                        return (x,)
                    if l not in clean:
                        clean[l] = x[sample, pos].detach()
                return pre

            handles = [m.register_forward_pre_hook(hook(l)) for l, m in enumerate(outs)]
            try:
                with torch.no_grad():
                    model(input_ids=ids, attention_mask=att)
                acc = [torch.zeros_like(clean[l], dtype=torch.float32) for l in range(len(outs))]
                for group in groups:
                    for j in range(1, steps + 1):
                        leaves = {l: (clean[l].float() * (j / steps)).requires_grad_() for l in group}
                        replace.update(leaves)
                        logits = model(input_ids=ids, attention_mask=att).logits
                        lp = torch.log_softmax(logits[sample, pos].float(), -1)[sample, tok]
                        f = lp.exp().sum() if target == "prob" else lp.sum()
                        for l, g in zip(leaves, torch.autograd.grad(f, list(leaves.values()))):
                            acc[l] += g
                        replace.clear()
                        bar.update()
            finally:
                for h in handles:
                    h.remove()
            owner = b.index[rows]  # the example of each sample
            for l in range(len(outs)):
                score = clean[l].float() * acc[l] / steps
                if per_example:
                    if totals[l] is None:
                        totals[l] = score.new_zeros(len(batches.items), score.shape[1])
                    totals[l].index_add_(0, owner, score)
                else:
                    totals[l] = score.sum(0) if totals[l] is None else totals[l] + score.sum(0)
    finally:
        bar.close()
        for p in model.parameters():
            p.requires_grad_(True)
    return totals
