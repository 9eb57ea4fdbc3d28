"""DEPN (Wu et al. 2023): integrated gradients of the answer's probability on MLP neurons (every answer token its
own sample, summed per text), DEPN's aggregator (per text, the neurons scoring at least ``threshold`` × that
text's maximum; ranked by the number of texts that keep them, then by summed attribution; the first ``neurons``,
else the top ``top`` fraction of all neurons, among those some text keeps), then:

* ``mode: paper`` (default; how the CLUE paper uses DEPN): the selected neurons' output weights are trained by
  the shared masked fine-tune. Its IG moves all layers together (``ig: joint``; one backward per step).
* ``mode: published`` (DEPN as its authors define it): the selected neurons are edited, their output-weight columns set to zero,
  with no training. Its IG is DEPN's per layer (``ig: per_layer``; L times the passes) with 20 points, and it
  edits DEPN's top z = ``neurons`` (default 20; give ``top`` instead for a share): a share such as the paper
  mode's 5 % (2,304 neurons of SmolLM2) zeroes far more than DEPN edits and wrecks the model (README).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...registry import NUMBER
from . import DENSE_MLP, LOSSES, METHODS, Context

if TYPE_CHECKING:  # annotations only: importing this module does not import torch
    import torch


def neuron_masks(ctx: Context, selected: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Masks of the selected neurons' output weights (in the standard mask format: every maskable key)."""
    import torch
    from .attribution import neuron_columns
    params = ctx.maskable()
    masks = {n: torch.zeros(p.shape, dtype=torch.bool) for n, p in params.items()}
    names = {id(p): n for n, p in params.items()}
    for l, neurons in enumerate(selected):
        masks[names[id(ctx.graph.mlp_outs("depn")[l].weight)]] = neuron_columns(ctx.graph, l, neurons)
    return masks


def aggregate(scores: list[torch.Tensor], *, top: float | None = None, neurons: int | None = None,
              threshold: float) -> list[torch.Tensor]:
    """DEPN's privacy-neuron aggregator. ``scores``: per layer, [texts, neurons]. Per text a neuron is kept when it
    scores at least ``threshold`` × the text's maximum over all layers; neurons are ranked by how many texts keep
    them, ties by summed score; the first ``neurons`` (else ``top`` × all neurons) of those kept by some text. Per
    layer, the selected neuron indices."""
    import torch
    flat = torch.cat([s.float() for s in scores], 1)  # [texts, all neurons]
    kept = flat >= threshold * flat.max(1, keepdim=True).values
    count, total = kept.sum(0), flat.sum(0)
    order = torch.argsort(total, descending=True, stable=True)
    order = order[torch.argsort(count[order], descending=True, stable=True)]
    k = neurons if neurons is not None else int(round(top * flat.shape[1]))
    k = min(max(1, k), int((count > 0).sum()))
    chosen = torch.zeros(flat.shape[1], dtype=torch.bool, device=flat.device)
    chosen[order[:k]] = True
    return [c.nonzero().squeeze(1) for c in chosen.split([s.shape[1] for s in scores])]


@METHODS.register("depn", requires=(DENSE_MLP,),
                  options={"top": NUMBER, "neurons": int, "threshold": NUMBER, "steps": int,
                           "ig": ("joint", "per_layer"), "loss": LOSSES},
                  modes={"paper": dict(top=0.05, steps=8, ig="joint"),
                         "published": dict(neurons=20, steps=20, ig="per_layer")},
                  defaults=dict(threshold=0.1), exclusive=(("top", "neurons"),))
def depn(ctx: Context):
    import torch
    from .attribution import neuron_ig
    o = ctx.options
    scores = neuron_ig(ctx.model, ctx.graph, ctx.forget_qa, batch_size=ctx.attribution_batch_size, steps=o["steps"],
                       target="prob", answer="all", per_layer=o["ig"] == "per_layer", per_example=True)
    size = {k: o[k] for k in ("top", "neurons") if k in o}
    neurons = aggregate(scores, **size, threshold=float(o["threshold"]))
    masks = neuron_masks(ctx, neurons)
    if o["mode"] == "paper":
        return [ctx.stage("finetune", masks)]
    with torch.no_grad():
        for name, p in ctx.maskable().items():
            p[masks[name].to(p.device)] = 0
    return [ctx.edit("edit", masks, "zeroed the detected neurons' output weights",
                     neurons=[idx.tolist() for idx in neurons])]
