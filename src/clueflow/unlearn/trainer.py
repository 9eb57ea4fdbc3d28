"""The one trainer every unlearning method runs through: a list of stages, each with its own mask.

A stage minimises ``forget_loss(D_f) + retain_weight · nll(D_r)`` for ``epochs`` passes over the forget batches
(one retain batch, cycled, per forget batch), updating only its mask's entries through a masked optimizer
(:mod:`.optim`): entries outside the mask are never written. Parameters outside the mask get no gradient
(``requires_grad`` off), which is where a masked step saves time over a full one. Gradient clipping uses the
norm over the trainable entries only.

Memory options (the run's settings): ``gradient_checkpointing`` recomputes each layer's activations in the
backward pass instead of keeping them; ``lora`` trains a full-model stage as a fresh peft LoRA adapter that is
merged into the weights when the stage ends, so the checkpoint is a plain model.
"""

from __future__ import annotations

import contextlib
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
    adapter: dict | None = None  # set by the trainer: the LoRA adapter it trained and merged, if any


@dataclass
class UnlearnData:
    forget: Batches  # GA/NPO examples
    refusal: Batches  # PO examples (same rows, refusal targets)
    retain: Batches | None


def _logits(model: nn.Module, batch) -> torch.Tensor:
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits


@torch.no_grad()
def reference_logprobs(model: nn.Module, batches: Batches) -> torch.Tensor:
    """Sequence log-probability of every forget example under the starting model (NPO's reference)."""
    out = torch.zeros(len(batches.items), device=batches.device)
    for b in batches.in_order():
        out[b.index] = sequence_logprob(_logits(model, b), b.labels).float()
    return out


@contextlib.contextmanager
def lora_adapter(model: nn.Module, spec: dict):
    """``model`` with a fresh LoRA adapter on ``spec``'s target modules (only the adapter trainable); the adapter
    is merged into the weights on exit."""
    from peft import LoraConfig, get_peft_model

    net = get_peft_model(model, LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                                           target_modules=spec["target_modules"]))
    try:
        yield net
    finally:
        net.merge_and_unload()


def train(model: nn.Module, stages: list[Stage], data: UnlearnData, *, beta: float = 0.1,
          grad_clip: float | None = 1.0, gradient_checkpointing: bool = False,
          lora: dict | None = None) -> list[dict]:
    """Run the stages in order; return one log row per optimizer step."""
    needs_ref = any(s.loss == "npo" and s.epochs > 0 for s in stages)
    ref = reference_logprobs(model, data.forget) if needs_ref else None
    retain_stream = data.retain.forever() if data.retain is not None else None
    log, step = [], 0
    total = sum(s.epochs * len(data.forget if s.loss != "po" else data.refusal) for s in stages)
    bar = tqdm(total=total, desc="unlearning", unit="step")
    if gradient_checkpointing:
        model.activation_checkpointing_enable()
    model.train()
    try:
        for stage in stages:
            masks = stage.mask
            trainable = None if masks is None else {n for n, m in masks.items() if bool(m.any())}
            if stage.epochs == 0 or trainable == set():
                log.append(dict(stage=stage.name, epoch=-1, step=step, skipped=True))
                continue
            with (lora_adapter(model, lora) if masks is None and lora is not None
                  else contextlib.nullcontext(model)) as net:
                if net is model:
                    for n, p in model.named_parameters():
                        p.requires_grad_(trainable is None or n in trainable)
                params = {n: p for n, p in net.named_parameters() if p.requires_grad}
                if net is not model:
                    stage.adapter = dict(lora, trainable_parameters=sum(p.numel() for p in params.values()))
                opt = OPTIMIZERS[stage.optimizer](params, masks, lr=stage.lr, weight_decay=stage.weight_decay,
                                                  **stage.options)
                forget = data.refusal if stage.loss == "po" else data.forget
                for epoch in range(stage.epochs):
                    for batch in forget.epoch():
                        start = time.perf_counter()
                        ref_lp = ref[batch.index] if ref is not None else None
                        forget_loss = FORGET_LOSSES[stage.loss](_logits(net, batch), batch.labels, ref_lp, beta)
                        loss, retain_loss = forget_loss, None
                        if stage.retain_weight and retain_stream is not None:
                            r = next(retain_stream)
                            retain_loss = nll(_logits(net, r), r.labels)
                            loss = loss + stage.retain_weight * retain_loss
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        norm = opt.clip_grad_norm_(grad_clip)
                        opt.step()
                        step += 1
                        log.append(dict(stage=stage.name, epoch=epoch, step=step, skipped=False, loss=loss.item(),
                                        forget_loss=forget_loss.item(),
                                        retain_loss=None if retain_loss is None else retain_loss.item(),
                                        grad_norm=float(norm), lr=stage.lr, seconds=time.perf_counter() - start))
                        bar.update()
                        bar.set_postfix(stage=stage.name, loss=f"{log[-1]['loss']:.3f}")
                del opt  # its state goes before the next stage's is allocated
    finally:
        bar.close()
        if gradient_checkpointing:
            model.activation_checkpointing_disable()
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()
    return log
