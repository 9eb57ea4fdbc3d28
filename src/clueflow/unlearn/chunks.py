"""How the unlearning stage cuts its largest pieces, in one torch-free place that job sizing
(:mod:`clueflow.resources`) reads too: the masked optimizer's update buckets and the sharded checkpoint's files."""

from __future__ import annotations

# trainable entries gathered per update call: 2**26 fp32 values (256 MiB of gradients, as much again of weights)
# bound the step's transient memory; at 8B with a 50 % mask, one call over every entry would need 4 B x 3.7e9
BUCKET_ENTRIES = 2**26


def buckets(sizes: list[int]) -> list[list[int]]:
    """Indices of ``sizes`` (trainable entries per parameter) in order, cut where a bucket would pass
    :data:`BUCKET_ENTRIES` (a parameter larger than that is a bucket of its own)."""
    out, total = [[]], 0
    for i, n in enumerate(sizes):
        if out[-1] and total + n > BUCKET_ENTRIES:
            out.append([])
            total = 0
        out[-1].append(i)
        total += n
    return out if out[0] else []


SHARD_BYTES = 5 * 2**30  # the largest safetensors file save_sharded writes (transformers' default shard size)
