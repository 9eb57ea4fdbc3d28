"""PCGU (Yu et al. 2023) for causal LMs: contrastive minimal pairs are each forget row (prompt + answer) and its
counterfactual (corrupted prompt + corrupted answer, token-aligned: the data's counterfactual pairs);
partitions are the weight vectors of output units (the rows of each weight viewed ``[out, in]`` whatever its
storage orientation, :func:`clueflow.anatomy.out_in`; a bias is one partition); a partition's score is the cosine
between its gradients on the two sides, and the lowest-cosine partitions (where the fact and its counterfactual
pull apart) are selected until the entry budget (``ratio``) is met. Then:

* ``mode: paper`` (default; how the CLUE paper uses PCGU): partitions are selected once, on every forget row, and
  fine-tuned by the shared masked fine-tune;
* ``mode: published`` (PCGU's own update, :func:`update`): every step takes a batch of pairs, re-selects the
  partitions on that batch's gradients at the current weights, and moves only those by a plain gradient step
  that lowers the fact's likelihood (θ += lr · ∇NLL(fact); PCGU's SGD on the advantaged side), at the run's
  ``lr``, ``batch_size`` and ``steps`` (null: ``epochs`` passes). The recorded mask is every partition some step
  moved.

Cosines are computed in fp32 one tensor at a time, as each counterfactual gradient arrives: the fact's gradients
are the only full copy."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Iterable

from tqdm.auto import tqdm

from ... import anatomy
from . import AT_CLUE_COUNT, LOSSES, METHODS, RATIO, Context

if TYPE_CHECKING:  # annotations only: importing this module does not import torch
    import torch
    from ..batches import Batches
    from ..trainer import Stage


def _units(g: torch.Tensor, module) -> torch.Tensor:
    """One row per partition: the whole bias, or each output unit's weights."""
    return g[None] if g.dim() == 1 else anatomy.out_in(module, g)


def lowest_cosine(g_a: dict[str, torch.Tensor], g_d: Iterable[tuple[str, torch.Tensor]], owner: dict,
                  params: dict[str, torch.Tensor], budget: int) -> dict[str, torch.Tensor]:
    """Masks (on each parameter's device) of the partitions with the lowest cosine between ``g_a`` and ``g_d`` (the
    stream of the other side's gradients), whole partitions in ascending order until ``budget`` entries are
    covered."""
    import torch
    parts = []  # (cosine, name, unit index, entries)
    for n, d in g_d:
        a, d = _units(g_a.pop(n), owner[n]), _units(d, owner[n])
        cos = torch.nn.functional.cosine_similarity(a.float(), d.float(), dim=1, eps=1e-12)
        parts += [(c, n, i, a.shape[1]) for i, c in enumerate(cos.tolist())]
    parts.sort(key=lambda t: t[0])
    used, units = 0, {n: [] for n in params}
    for _, n, i, size in parts:
        if used >= budget:
            break
        units[n].append(i)
        used += size
    return {n: _unit_mask(p, owner[n], units[n]) for n, p in params.items()}


def _unit_mask(p: torch.Tensor, module, units: list[int]) -> torch.Tensor:
    """A bool mask of ``p``'s shape on its device selecting the partitions ``units``, built by one transfer of the
    unit indices (not one write per unit, nor a copy of a CPU mask of every entry)."""
    import torch
    if p.dim() == 1:
        return torch.full(p.shape, bool(units), dtype=torch.bool, device=p.device)
    out, inp = anatomy.out_in(module, p).shape
    picked = torch.zeros(out, dtype=torch.bool, device=p.device)
    picked[torch.tensor(units, dtype=torch.long).to(p.device)] = True
    return anatomy.out_in(module, picked[:, None].expand(out, inp)).contiguous()


def select(ctx: Context, counterfactuals: Batches, g_a: dict[str, torch.Tensor], budget: int
           ) -> dict[str, torch.Tensor]:
    """Masks of the lowest-cosine partitions between ``g_a`` (the facts' gradients, left in place) and the
    counterfactuals' gradients at the current weights, up to ``budget`` entries."""
    from .attribution import gradient_stream
    params = ctx.maskable()
    g_d = gradient_stream(ctx.model, params, counterfactuals, batch_size=ctx.attribution_batch_size)
    return lowest_cosine(dict(g_a), g_d, anatomy.param_modules(ctx.model), params, budget)


def update(ctx: Context, facts: Batches, counterfactuals: Batches) -> Stage:
    """PCGU's own update (module docstring), in place; its stage: the union of the partitions moved."""
    import torch
    from .attribution import gradients
    s, params, budget = ctx.settings, ctx.maskable(), ctx.budget()
    steps = s["steps"] if s["steps"] is not None else s["epochs"] * len(facts)
    moved = {n: torch.zeros(p.shape, dtype=torch.bool, device=p.device) for n, p in params.items()}
    for batch in tqdm(itertools.islice(facts.forever(), steps), total=steps, desc="pcgu", unit="step"):
        index = batch.index.tolist()  # the facts' seeded epochs, as the trainer draws them; the same rows' pairs
        g_a = gradients(ctx.model, params, facts.subset(index), batch_size=ctx.attribution_batch_size)
        chosen = select(ctx, counterfactuals.subset(index), g_a, budget)
        with torch.no_grad():
            for n, p in params.items():
                m = chosen[n]
                p[m] += s["lr"] * g_a[n].to(p.device)[m]
                moved[n] |= chosen[n]
    return ctx.edit("update", moved, "SGD on the facts' NLL over the partitions each batch selects",
                    lr=s["lr"], steps=steps, batch_size=s["batch_size"])


@METHODS.register("pcgu", options={"ratio": RATIO, "loss": LOSSES}, modes={"paper": {}, "published": {}},
                  defaults=AT_CLUE_COUNT)
def pcgu(ctx: Context):
    from .attribution import gradients
    if ctx.forget_batches is None:
        raise ValueError("pcgu needs the forget rows' counterfactual pairs")
    counterfactuals = ctx.forget_batches("counterfactual")
    if ctx.options["mode"] == "published":
        return [update(ctx, ctx.forget_qa, counterfactuals)]
    g_a = gradients(ctx.model, ctx.maskable(), ctx.forget_qa, batch_size=ctx.attribution_batch_size)
    return [ctx.stage("finetune", select(ctx, counterfactuals, g_a, ctx.budget()))]
