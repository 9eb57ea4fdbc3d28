"""MEMIT-style localization (Meng et al.; Patil et al. 2024): causal tracing in the denoising direction only.

For each layer l, the corrupted prompt is run with layer l's MLP output restored from the clean run; the
layer's importance is the mean gain in the clean answer's probability over the corrupted run,
IE_l = P_restore-l(answer) − P_corrupted(answer), at the last prompt position. The ``window`` layers around the
most important one have their MLP output projection (MEMIT's edit site) trained."""

from __future__ import annotations

import torch

from ... import anatomy
from ...devices import model_device
from ...scoring import encode_continuation, encode_prompt
from . import DENSE_MLP, LOSSES, METHODS, Context


def _prompts(tok, texts: list[str], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    enc = [encode_prompt(tok, t) for t in texts]
    width = max(map(len, enc))
    ids = torch.full((len(enc), width), tok.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, : len(e)], mask[i, : len(e)] = torch.tensor(e), 1
    return ids.to(device), mask.to(device), torch.tensor([len(e) - 1 for e in enc], device=device)


@torch.no_grad()
def layer_effects(ctx: Context) -> torch.Tensor:
    """Mean indirect effect of restoring each layer's MLP output, over the forget rows."""
    df, layers, device = ctx.forget_df, ctx.graph.layers, model_device(ctx.model)
    batch_size = ctx.attribution_batch_size
    effects = torch.zeros(len(layers), device=device)
    for start in range(0, len(df), batch_size):
        rows = df.iloc[start:start + batch_size]
        clean_ids, mask, last = _prompts(ctx.tok, rows["prompt"].tolist(), device)
        corrupt_ids, _, _ = _prompts(ctx.tok, rows["corrupted_prompt"].tolist(), device)  # token-aligned by schema
        answer = torch.tensor([encode_continuation(ctx.tok, a)[0] for a in rows["answer"]], device=device)
        r = torch.arange(len(rows), device=device)
        saved: dict[int, torch.Tensor] = {}
        restore: list[int] = []

        def hook(l):
            def fwd(module, args, out):
                if l in restore:
                    return saved[l]
                if not restore and l not in saved and recording:
                    saved[l] = out.detach()
            return fwd

        def prob(ids):
            logits = ctx.model(input_ids=ids, attention_mask=mask).logits
            return torch.softmax(logits[r, last].float(), -1)[r, answer]

        handles = [layer.mlp.register_forward_hook(hook(l)) for l, layer in enumerate(layers)]
        try:
            recording = True
            prob(clean_ids)
            recording = False
            base = prob(corrupt_ids)
            for l in range(len(layers)):
                restore[:] = [l]
                effects[l] += (prob(corrupt_ids) - base).sum()
            restore.clear()
        finally:
            for h in handles:
                h.remove()
    return effects / max(len(df), 1)


@METHODS.register("memit", requires=(DENSE_MLP,), options={"window": int, "loss": LOSSES})
def memit(ctx: Context):
    outs = ctx.graph.mlp_outs("memit")
    effects = layer_effects(ctx)
    window, n = int(ctx.options.get("window", 3)), len(effects)
    peak = int(effects.argmax())
    lo = max(0, min(peak - window // 2, n - window))
    chosen = {id(outs[l]) for l in range(lo, min(n, lo + window))}
    owner = anatomy.param_modules(ctx.model)
    masks = {name: torch.full(p.shape, id(owner[name]) in chosen, dtype=torch.bool)
             for name, p in ctx.maskable().items()}
    return [ctx.stage("finetune", masks)]
