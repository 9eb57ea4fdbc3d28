"""The one trainer every unlearning method runs through: a list of stages, each with its own mask.

A stage minimises ``forget_loss(D_f) + retain_weight · nll(D_r)`` for ``epochs`` passes over the forget batches
(one retain batch, cycled, per forget batch), updating only its mask's entries through a masked optimizer
(:mod:`.optim`): entries outside the mask are never written. Parameters outside the mask get no gradient
(``requires_grad`` off), which is where a masked step saves time over a full one. Gradient clipping uses the
norm over the trainable entries only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .batches import Batches
from .losses import FORGET_LOSSES, nll, sequence_logprob
from .optim import OPTIMIZERS


@dataclass
class Stage:
    name: str
    mask: dict[str, torch.Tensor] | None  # None: every parameter of the model
    loss: str = "po"
    epochs: int = 1
    lr: float = 1e-5
    retain_weight: float = 0.0
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    options: dict = field(default_factory=dict)  # extra optimizer arguments (e.g. Sophia's rho)

    def masks_for(self, model: nn.Module) -> dict[str, torch.Tensor]:
        if self.mask is None:
            return {n: torch.ones(p.shape, dtype=torch.bool) for n, p in model.named_parameters()}
        return self.mask


@dataclass
class UnlearnData:
    forget: Batches  # GA/NPO examples
    refusal: Batches  # PO examples (same rows, refusal targets)
    retain: Batches | None


@torch.no_grad()
def reference_logprobs(model: nn.Module, batches: Batches) -> torch.Tensor:
    """Sequence log-probability of every forget example under the starting model (NPO's reference)."""
    out = torch.zeros(len(batches.items))
    for b in batches.in_order():
        out[b.index] = sequence_logprob(model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits,
                                        b.labels).float()
    return out



def train(model: nn.Module, stages: list[Stage], data: UnlearnData, *, beta: float = 0.1,
          grad_clip: float | None = 1.0) -> list[dict]:
    """Run the stages in order; return one log row per optimizer step."""
    needs_ref = any(s.loss == "npo" and s.epochs > 0 for s in stages)
    ref = reference_logprobs(model, data.forget) if needs_ref else None
    retain_stream = data.retain.forever() if data.retain is not None else None
    log, step = [], 0
    total = sum(s.epochs * len(data.forget if s.loss != "po" else data.refusal) for s in stages)
    bar = tqdm(total=total, desc="unlearning", unit="step")
    model.train()
    for stage in stages:
        masks = stage.masks_for(model)
        trainable = {n for n, m in masks.items() if bool(m.any())}
        if stage.epochs == 0 or not trainable:
            log.append(dict(stage=stage.name, epoch=-1, step=step, skipped=True))
            continue
        params = dict(model.named_parameters())
        for n, p in params.items():
            p.requires_grad_(n in trainable)
        partial = {n: masks[n] for n in trainable if not bool(masks[n].all())}
        opt = OPTIMIZERS[stage.optimizer](params, masks, lr=stage.lr, weight_decay=stage.weight_decay,
                                          **stage.options)
        forget = data.refusal if stage.loss == "po" else data.forget
        for epoch in range(stage.epochs):
            for batch in forget.epoch():
                start = time.perf_counter()
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
                ref_lp = ref[batch.index] if ref is not None else None
                forget_loss = FORGET_LOSSES[stage.loss](logits, batch.labels, ref_lp, beta)
                loss, retain_loss = forget_loss, None
                if stage.retain_weight and retain_stream is not None:
                    r = next(retain_stream)
                    retain_loss = nll(model(input_ids=r.input_ids, attention_mask=r.attention_mask).logits, r.labels)
                    loss = loss + stage.retain_weight * retain_loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                for n, m in partial.items():  # entries outside the mask must not count towards the clip norm
                    params[n].grad.mul_(m)
                norm = nn.utils.clip_grad_norm_([params[n] for n in trainable], grad_clip or float("inf"))
                opt.step()
                step += 1
                log.append(dict(stage=stage.name, epoch=epoch, step=step, skipped=False, loss=loss.item(),
                                forget_loss=forget_loss.item(),
                                retain_loss=None if retain_loss is None else retain_loss.item(),
                                grad_norm=float(norm), lr=stage.lr, seconds=time.perf_counter() - start))
                bar.update()
                bar.set_postfix(stage=stage.name, loss=f"{log[-1]['loss']:.3f}")
    bar.close()
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return log
