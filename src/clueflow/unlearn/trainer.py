"""The one trainer every unlearning method runs through: a list of stages, each with its own mask.

A stage minimises ``forget_loss(D_f) + retain_weight · nll(D_r)`` for ``epochs`` passes over the forget batches
(one retain batch, cycled, per forget batch) or, when its ``steps`` is set, for exactly that many optimizer steps
over as many shuffled passes as they take (the log's ``epoch`` counts the passes), updating only its mask's
entries through a masked optimizer (:mod:`.optim`): entries outside the mask are never written. Parameters
outside the mask get no gradient (``requires_grad`` off), which is where a masked step saves time over a full one.
Gradient clipping uses the norm over the trainable entries only.

Memory options (the run's settings): ``gradient_checkpointing`` recomputes each layer's activations in the
backward pass instead of keeping them; ``lora`` trains a full-model stage as a fresh peft LoRA adapter that is
merged into the weights when the stage ends, so the checkpoint is a plain model. With a retain term, one process
backpropagates the forget loss before the retain forward, so one graph at a time is alive (the gradients are the
same sums); ``joint_retain_pass`` instead runs the forget and retain rows as one right-padded batch, one forward
and one backward: both graphs alive at once, and at the small batches of a CPU run about half the step time
(``benchmarks/joint_retain_pass.py``). The losses are the same functions of the same rows (causal attention:
padding on the right changes no real position), equal up to float rounding.

Several processes (``torchrun``/``accelerate launch``, ``WORLD_SIZE`` > 1): every rank draws the same global batches
(same seed) and trains on its share of the rows, ``rank::world`` (the NPO reference too), so a global batch
divisible by the process count gives one process's updates up to round-off. Full-parameter stages: the model is
wrapped by ``accelerate`` (DDP: every rank holds the weights and the optimizer, gradients are averaged). Masked
stages: the model is sharded by FSDP2 (:mod:`.sharded`), each rank holding and updating its rows of every weight
and of its mask.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..devices import autocast, model_device
from ..models import set_activation_checkpointing
from .batches import Batch, Batches
from .losses import FORGET_LOSSES, IGNORE, nll, sequence_logprob
from .optim import OPTIMIZERS
from .sharded import all_sum, is_sharded, shard


@dataclass
class Stage:
    name: str
    mask: dict[str, torch.Tensor] | None  # None: every parameter of the model
    loss: str = "po"
    epochs: int = 1
    steps: int | None = None  # set (by :func:`allot_steps`): exactly this many optimizer steps instead of epochs
    lr: float = 1e-5
    fixed_lr: bool = False  # the method set this stage's lr itself: an lr sweep leaves it alone
    retain_weight: float = 0.0
    forget_weight: float = 1.0  # 0: the retain term alone (the retain-only reference), still one step per forget batch
    optimizer: str = "adamw"
    weight_decay: float = 0.0
    options: dict = field(default_factory=dict)  # extra optimizer arguments (e.g. Sophia's rho)
    adapter: dict | None = None  # set by the trainer: the LoRA adapter it trained and merged, if any
    edit: dict | None = None  # set: the method changed the weights itself (what it did); epochs 0, so no training


@dataclass
class UnlearnData:
    forget: Batches  # GA/NPO examples
    refusal: Batches  # PO examples (same rows, refusal targets)
    retain: Batches | None


def allot_steps(stages: list[Stage], steps: int) -> None:
    """Split ``steps`` optimizer steps over the stages in proportion to their epochs (largest remainders get the
    rounding); a stage with 0 epochs stays skipped."""
    epochs = sum(s.epochs for s in stages)
    if epochs == 0:  # every stage skipped
        return
    shares = [steps * s.epochs / epochs for s in stages]
    counts = [int(x) for x in shares]
    by_remainder = sorted(range(len(stages)), key=lambda i: counts[i] - shares[i])
    for i in by_remainder[:steps - sum(counts)]:
        counts[i] += 1
    for stage, n in zip(stages, counts):
        stage.steps = n


def schedule(forget: Batches, stage: Stage):
    """(epoch, batch) of each optimizer step of ``stage``: ``epochs`` passes, or exactly ``steps`` batches over as
    many shuffled passes as they take."""
    epoch, done = 0, 0
    while (epoch < stage.epochs) if stage.steps is None else (done < stage.steps):
        for batch in forget.epoch():
            if stage.steps is not None and done == stage.steps:
                return
            yield epoch, batch
            done += 1
        epoch += 1


def stage_steps(stage: Stage, forget: Batches) -> int:
    return stage.epochs * len(forget) if stage.steps is None else stage.steps


def _logits(model: nn.Module, batch, amp: str | None = None) -> torch.Tensor:
    """The batch's logits, the forward pass under ``amp`` (``model.autocast``; the backward follows its dtypes)."""
    with autocast(batch.input_ids.device, amp):
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    return logits if amp is None else logits.float()  # the losses in full precision


def stack(a: Batch, b: Batch, pad_id: int) -> Batch:
    """Rows of ``a`` then ``b`` as one batch, right-padded to the wider one."""
    width = max(a.input_ids.shape[1], b.input_ids.shape[1])

    def wide(t, fill):
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=fill)

    return Batch(torch.cat([wide(a.input_ids, pad_id), wide(b.input_ids, pad_id)]),
                 torch.cat([wide(a.attention_mask, 0), wide(b.attention_mask, 0)]),
                 torch.cat([wide(a.labels, IGNORE), wide(b.labels, IGNORE)]), torch.cat([a.index, b.index]))


def world() -> tuple[int, int]:
    """(rank, process count) of this training process, as ``torchrun``/``accelerate launch`` set them."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def share(batch: Batch, rank: int, size: int) -> tuple[Batch, float]:
    """Rank ``rank``'s rows of a global batch and the weight of its loss, its share of the rows times the process
    count (gradients are averaged over processes, so a mean over rows stays the batch's mean when shares differ);
    a rank left without rows (a batch smaller than the process count) runs row 0 at weight 0."""
    if size == 1:
        return batch, 1.0
    rows = list(range(rank, len(batch.index), size))
    return Batch(*(t[rows or [0]] for t in (batch.input_ids, batch.attention_mask, batch.labels, batch.index))), \
        len(rows) * size / len(batch.index)


@torch.no_grad()
def reference_logprobs(model: nn.Module, batches: Batches, rank: int = 0, size: int = 1,
                       amp: str | None = None) -> torch.Tensor:
    """Sequence log-probability of every forget example under the starting model (NPO's reference); with several
    processes, of this rank's share of them (0 elsewhere)."""
    out = torch.zeros(len(batches.items), device=batches.device)
    for b in batches.in_order():
        b = share(b, rank, size)[0]
        out[b.index] = sequence_logprob(_logits(model, b, amp), b.labels).float()
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


def _read(**scalars: torch.Tensor | None) -> dict[str, float | None]:
    """The step's scalars as floats, read from the device in one transfer (one host sync per step, not four)."""
    names = [k for k, v in scalars.items() if v is not None]
    device = scalars[names[0]].device
    values = torch.stack([torch.as_tensor(scalars[k], device=device).detach().float().reshape(())
                          for k in names]).tolist()
    return {k: None for k in scalars} | dict(zip(names, values))


def train(model: nn.Module, stages: list[Stage], data: UnlearnData, *, beta: float = 0.1,
          grad_clip: float | None = 1.0, gradient_checkpointing: bool = False,
          lora: dict | None = None, amp: str | None = None, joint_retain_pass: bool = False) -> list[dict]:
    """Run the stages in order; return one log row per optimizer step (every process's losses averaged).
    ``amp``: the forward passes' autocast dtype (``model.autocast``). ``joint_retain_pass``: one process runs a
    step's forget and retain rows as one batch (one forward, one backward) instead of one after the other."""
    rank, size = world()
    accel, sharded = None, size > 1 and any(s.mask is not None for s in stages)
    if sharded:
        if lora is not None:
            raise ValueError("LoRA trains full-parameter stages: it does not run under FSDP")
        if not is_sharded(next(model.parameters())):
            shard(model, model_device(model))
    elif size > 1:
        from accelerate import Accelerator

        accel = Accelerator(cpu=model_device(model).type == "cpu")
    needs_ref = any(s.loss == "npo" and s.epochs > 0 for s in stages)
    ref = reference_logprobs(model, data.forget, rank, size, amp) if needs_ref else None
    if ref is not None and size > 1:  # every rank computed its share: each needs all of it
        ref = accel.reduce(ref, "sum") if accel is not None else all_sum(ref)
    retain_stream = data.retain.forever() if data.retain is not None else None
    log, step = [], 0
    total = sum(stage_steps(s, data.forget if s.loss != "po" else data.refusal) for s in stages)
    bar = tqdm(total=total, desc="unlearning", unit="step", disable=rank != 0)
    if gradient_checkpointing:
        set_activation_checkpointing(model, True)
    model.train()
    try:
        for stage in stages:
            masks = stage.mask
            trainable = None if masks is None else {n for n, m in masks.items() if bool(m.any())}
            if stage.epochs == 0 or stage.steps == 0 or trainable == set():
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
                run = net if accel is None else accel.prepare(net)  # DDP shares net's parameters
                forget = data.refusal if stage.loss == "po" else data.forget
                for epoch, batch in schedule(forget, stage):
                    start = time.perf_counter()
                    batch, weight = share(batch, rank, size)
                    ref_lp = ref[batch.index] if ref is not None else None
                    opt.zero_grad(set_to_none=True)
                    with_retain = bool(stage.retain_weight) and retain_stream is not None
                    forget_fn = FORGET_LOSSES[stage.loss]
                    if not stage.forget_weight:  # no forget forward at all
                        r, r_weight = share(next(retain_stream), rank, size)
                        retain_loss = nll(_logits(run, r, amp), r.labels) * r_weight
                        forget_loss, loss = None, stage.retain_weight * retain_loss
                        if accel is None:
                            loss.backward()
                    elif with_retain and joint_retain_pass and size == 1:
                        r = next(retain_stream)
                        logits = _logits(run, stack(batch, r, data.retain.pad_id), amp)
                        n, f_width, r_width = len(batch.index), batch.labels.shape[1], r.labels.shape[1]
                        forget_loss = forget_fn(logits[:n, :f_width], batch.labels, ref_lp, beta)
                        retain_loss = nll(logits[n:, :r_width], r.labels)
                        loss = forget_loss + stage.retain_weight * retain_loss
                        loss.backward()
                    else:
                        forget_loss = forget_fn(_logits(run, batch, amp), batch.labels, ref_lp, beta)
                        if weight != 1.0:
                            forget_loss = forget_loss * weight
                        loss, retain_loss = forget_loss, None
                        if accel is None:
                            # one process or FSDP: the forget graph goes before the retain forward; each
                            # parameter's gradient is the same one sum of the two terms as in a single backward
                            forget_loss.backward()
                        if with_retain:
                            r, r_weight = share(next(retain_stream), rank, size)
                            retain_loss = nll(_logits(run, r, amp), r.labels)
                            if r_weight != 1.0:
                                retain_loss = retain_loss * r_weight
                            loss = loss + stage.retain_weight * retain_loss
                            if accel is None:
                                (stage.retain_weight * retain_loss).backward()
                    if accel is None:
                        norm = opt.clip_grad_norm_(grad_clip)
                        if sharded:  # the log's losses: the batch's, as DDP's mean over processes gives them
                            forget_loss, loss, retain_loss = (
                                None if t is None else all_sum(t.detach().clone()) / size
                                for t in (forget_loss, loss, retain_loss))
                    else:
                        accel.backward(loss)
                        norm = accel.clip_grad_norm_(params.values(), grad_clip or float("inf"))
                        forget_loss, loss, retain_loss = (None if t is None else accel.reduce(t.detach(), "mean")
                                                          for t in (forget_loss, loss, retain_loss))
                    opt.step()
                    step += 1
                    log.append(dict(stage=stage.name, epoch=epoch, step=step, skipped=False,
                                    **_read(loss=loss, forget_loss=forget_loss, retain_loss=retain_loss,
                                            grad_norm=norm),
                                    lr=stage.lr, seconds=time.perf_counter() - start))
                    bar.update()
                    bar.set_postfix(stage=stage.name, loss=f"{log[-1]['loss']:.3f}")
                del opt, run  # its state goes before the next stage's is allocated
    finally:
        bar.close()
        if gradient_checkpointing:
            set_activation_checkpointing(model, False)
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()
    return log
