"""MEMIT (Meng et al. 2023; as a deletion method, Patil et al. 2024): causal tracing in the denoising direction
picks the layers. For each layer l, the corrupted prompt is run with layer l's MLP output restored from the clean
run; the layer's importance is the mean gain in the clean answer's probability over the corrupted run,
IE_l = P_restore-l(answer) − P_corrupted(answer), at the last prompt position. The ``window`` layers around the
most important one are MEMIT's edit site, their MLP output projections W_l; then:

* ``mode: paper`` (default; how the CLUE paper uses MEMIT): those matrices are trained by the shared masked
  fine-tune;
* ``mode: published``: MEMIT's closed-form batch edit (:func:`edit`). Keys are the projections' inputs at each
  forget prompt's last token (ROME's ``fact_token: last``; the rows carry no subject span); the target of each row
  is the residual stream after the window's top layer L plus a δ optimized (``v_steps`` Adam steps at ``v_lr``, its
  norm clamped to ``clamp`` × the clean MLP output's, a ``v_weight_decay`` penalty) to push the answer's first
  token down (Patil et al.'s fact erasure); layer by layer, bottom up, W_l += R Kᵀ (λ C + K Kᵀ)⁻¹ with R the
  remaining residual shared over the layers left and C the key second moment over every token of the retain
  rows and of text the model samples itself (MEMIT's Wikipedia sample is not available offline). δ's objective
  carries MEMIT's KL term: ``kl_factor`` × KL(before ‖ with δ) of the next-token distribution after
  "{subject} is a", δ added at that prompt's last token, for each row whose data carries a ``subject`` (rows
  without one get no KL term). Defaults are MEMIT's GPT-J hyperparameters.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from ... import anatomy
from ...registry import NUMBER
from . import DENSE_MLP, LOSSES, METHODS, Context

if TYPE_CHECKING:  # annotations only: importing this module does not import torch
    import torch


def _prompts(tok, texts: list[str], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    import torch
    from ...scoring import encode_prompt, pad_id, padded
    enc = [encode_prompt(tok, t) for t in texts]
    ids, mask = padded(enc, pad_id(tok))
    return ids.to(device), mask.to(device), torch.tensor([len(e) - 1 for e in enc], device=device)


def layer_effects(ctx: Context) -> torch.Tensor:
    """Mean indirect effect of restoring each layer's MLP output, over the forget rows."""
    import torch
    from ...devices import model_device
    from ...scoring import encode_continuation
    with torch.no_grad():  # an analysis pass: no graph
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


def closed_form(keys: torch.Tensor, resid: torch.Tensor, cov: torch.Tensor, lam: float) -> torch.Tensor:
    """MEMIT's update ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹ (``keys`` K [d_in, n], ``resid`` R [d_out, n], ``cov`` C
    [d_in, d_in]): the least-squares ΔW with ΔW K ≈ R, each key direction's change weighed against λ C."""
    import torch
    keys, resid, cov = keys.double(), resid.double(), cov.double()
    return torch.linalg.solve(lam * cov + keys @ keys.T, keys @ resid.T).T


class _Site:
    """Reads and writes one batch's activations at the prompts' last tokens: the MLP output projection input of
    each layer of the window (the keys), the residual stream after its ``top`` layer (hidden states, or the final
    norm's input after the last layer) and, while ``delta`` is set, adds it to ``top``'s MLP output."""

    def __init__(self, ctx: Context, layers: list[int], mask, last):
        import torch
        self.ctx, self.layers, self.mask, self.last = ctx, layers, mask, last
        self.outs, self.top = ctx.graph.mlp_outs("memit"), layers[-1]
        self.keys: dict[int, torch.Tensor] = {}
        self.delta: torch.Tensor | None = None
        self.final = None
        # logits only at the positions read, where the model's forward can keep a subset
        self.positions, self.index = torch.unique(last, return_inverse=True)
        self.keep = "logits_to_keep" in inspect.signature(ctx.model.forward).parameters

    def run(self, ids) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits at the last tokens, residual after ``top`` there)."""
        import torch
        r, last, outs = torch.arange(len(ids), device=ids.device), self.last, self.outs
        after_last_layer = self.top == len(outs) - 1

        def key(l):
            return lambda m, args: self.keys.__setitem__(l, args[0][r, last].detach())

        def add(m, args, out):
            if self.delta is not None:
                out = out.clone()
                out[r, last] = out[r, last] + self.delta.to(out.dtype)
                return out

        def final(m, args):
            self.final = args[0][r, last]

        hooks = [outs[l].register_forward_pre_hook(key(l)) for l in self.layers]
        hooks.append(outs[self.top].register_forward_hook(add))
        if after_last_layer:  # hidden_states' last entry is after the final norm
            hooks.append(self.ctx.graph.final_norm.register_forward_pre_hook(final))
        kw = {"logits_to_keep": self.positions} if self.keep else {}
        try:
            out = self.ctx.model(input_ids=ids, attention_mask=self.mask, output_hidden_states=not after_last_layer,
                                 **kw)
        finally:
            for h in hooks:
                h.remove()
        resid = self.final if after_last_layer else out.hidden_states[self.top + 1][r, last]
        logits = out.logits[r, self.index] if self.keep else out.logits[r, last]
        return logits, resid


def sampled_text(ctx: Context, tokens: int, length: int = 64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(ids, attention mask) batches of at least ``tokens`` tokens the model samples from its BOS token (seeded by
    the run's seed): generic text of the model's own distribution, MEMIT's Wikipedia sample offline."""
    import torch
    from ...devices import model_device
    from ...scoring import pad_id
    with torch.no_grad():  # an analysis pass: no graph
        start = ctx.tok.bos_token_id if ctx.tok.bos_token_id is not None else ctx.tok.eos_token_id
        n, size = -(-tokens // length), ctx.attribution_batch_size
        device = model_device(ctx.model)
        # the seeded sampling leaves the caller's random state (on the model's device too) as it was
        with torch.random.fork_rng(devices=[device] if device.type != "cpu" else [], device_type=device.type):
            torch.manual_seed(ctx.seed)
            out = []
            for k in range(0, n, size):
                ids = torch.full((min(size, n - k), 1), start, device=device)
                seq = ctx.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0,
                                         max_new_tokens=length - 1, min_new_tokens=length - 1,
                                         pad_token_id=pad_id(ctx.tok))
                out.append((seq, torch.ones_like(seq)))
        return out


def key_covariance(ctx: Context, layers: list[int]) -> dict[int, torch.Tensor]:
    """E[k kᵀ] of each layer's MLP output projection input over every (unpadded) token of the retain rows and of
    text the model samples (:func:`sampled_text`; ``cov_tokens``, default twice the keys' width, so that C has
    full rank: with only the retain rows' few hundred tokens most key directions would be unconstrained)."""
    import torch
    outs, sums, count = ctx.graph.mlp_outs("memit"), {}, 0
    width = anatomy.out_in(outs[layers[0]], outs[layers[0]].weight).shape[1]
    sample = sampled_text(ctx, int(ctx.options.get("cov_tokens", 2 * width)))
    retain = [(b.input_ids, b.attention_mask) for b in ctx.data.retain.in_order(ctx.attribution_batch_size)]
    for ids, att in retain + sample:
        real = att.bool()

        def grab(l):
            def pre(m, args):
                k = args[0][real].double()
                sums[l] = k.T @ k + sums.get(l, 0)
            return pre

        hooks = [outs[l].register_forward_pre_hook(grab(l)) for l in layers]
        try:
            with torch.no_grad():
                ctx.model(input_ids=ids, attention_mask=att)
        finally:
            for h in hooks:
                h.remove()
        count += int(real.sum())
    return {l: sums[l] / max(count, 1) for l in layers}


class _KLTerm:
    """MEMIT's essence term: KL(before ‖ with δ) of the next-token distribution at the end of "{subject} is a",
    each row's δ added there, over the rows with a subject (none: 0)."""

    def __init__(self, ctx: Context, layers: list[int], df):
        import torch
        from ...devices import model_device
        subjects = df["subject"] if "subject" in df else []
        self.rows = [i for i, s in enumerate(subjects) if isinstance(s, str)]
        if not self.rows:
            return
        ids, mask, last = _prompts(ctx.tok, [f"{subjects.iloc[i]} is a" for i in self.rows], model_device(ctx.model))
        self.site, self.ids = _Site(ctx, layers, mask, last), ids
        with torch.no_grad():
            self.before = torch.log_softmax(self.site.run(ids)[0].float(), -1)

    def __call__(self, delta: torch.Tensor) -> torch.Tensor:
        import torch
        if not self.rows:
            return delta.new_zeros(())
        self.site.delta = delta[self.rows]
        after = torch.log_softmax(self.site.run(self.ids)[0].float(), -1)
        self.site.delta = None
        return torch.nn.functional.kl_div(after, self.before, log_target=True, reduction="batchmean")


def edit(ctx: Context, layers: list[int]) -> None:
    """MEMIT's batch edit of ``layers``' MLP output projections, in place (module docstring)."""
    import torch
    from ...devices import model_device
    from ...scoring import encode_continuation
    o, outs, device = ctx.options, ctx.graph.mlp_outs("memit"), model_device(ctx.model)
    df = ctx.forget_df
    ids, mask, last = _prompts(ctx.tok, df["prompt"].tolist(), device)
    answer = torch.tensor([encode_continuation(ctx.tok, a)[0] for a in df["answer"]], device=device)
    site = _Site(ctx, layers, mask, last)
    cov = key_covariance(ctx, layers)
    for p in ctx.model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            site.run(ids)
            clean_out = outs[layers[-1]](site.keys[layers[-1]])  # the top layer's MLP output at the last tokens
        kl = _KLTerm(ctx, layers, df)
        delta = torch.zeros_like(clean_out, dtype=torch.float32, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=float(o["v_lr"]))
        limit = float(o["clamp"]) * clean_out.float().norm(dim=-1, keepdim=True)
        decay = float(o["v_weight_decay"])
        for _ in range(o["v_steps"]):
            site.delta = delta
            logits, _ = site.run(ids)
            lp = torch.log_softmax(logits.float(), -1)[torch.arange(len(df)), answer]
            loss = lp.mean() + decay * (delta.norm(dim=-1, keepdim=True) / limit).square().mean()
            loss = loss + float(o["kl_factor"]) * kl(delta)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                delta.mul_((limit / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0))
        with torch.no_grad():
            site.delta = delta.detach()
            _, target = site.run(ids)
            site.delta = None
            for i, l in enumerate(layers):
                _, current = site.run(ids)
                resid = (target - current).double() / (len(layers) - i)
                w = anatomy.out_in(outs[l], outs[l].weight)
                w += closed_form(site.keys[l].double().T, resid.T, cov[l], float(o["lambda"])).to(w.dtype)
    finally:
        for p in ctx.model.parameters():
            p.requires_grad_(True)


@METHODS.register("memit", requires=(DENSE_MLP,),
                  options={"window": int, "lambda": NUMBER, "v_steps": int, "v_lr": NUMBER, "v_weight_decay": NUMBER,
                           "clamp": NUMBER, "kl_factor": NUMBER, "cov_tokens": int, "loss": LOSSES},
                  modes={"paper": {}, "published": dict(**{"lambda": 15000.0}, v_steps=20, v_lr=0.5,
                                                         v_weight_decay=0.5, clamp=0.75, kl_factor=0.0625)},
                  defaults=dict(window=3))
def memit(ctx: Context):
    import torch
    outs = ctx.graph.mlp_outs("memit")
    effects = layer_effects(ctx)
    window, n = ctx.options["window"], len(effects)
    peak = int(effects.argmax())
    lo = max(0, min(peak - window // 2, n - window))
    layers = list(range(lo, min(n, lo + window)))
    chosen = {id(outs[l]) for l in layers}
    owner = anatomy.param_modules(ctx.model)
    masks = {name: torch.full(p.shape, id(owner[name]) in chosen, dtype=torch.bool)
             for name, p in ctx.maskable().items()}
    if ctx.options["mode"] == "paper":
        return [ctx.stage("finetune", masks)]
    edit(ctx, layers)
    return [ctx.edit("edit", masks, "closed-form batch edit of the layers' MLP output projections", layers=layers)]
