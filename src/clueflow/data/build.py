"""Build one configured data set (generator or loader), assign splits and ids, validate, write atomically."""

from __future__ import annotations

import random
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from tqdm.auto import tqdm

from ..errors import ClueflowError
from ..io import write_parquet
from .generators import GENERATORS, GenContext
from .loaders import LOADERS
from .schema import SPLITS, to_frame, validate_frame

DEFAULT_SPLITS = {"circuit": 0.4, "train": 0.3, "test": 0.3}
MAX_PROPOSALS_PER_ROW = 50


def _shift_shared_space(tok, row: dict[str, Any]) -> dict[str, Any]:
    """If the tokenizer splits a leading space off every answer as the same token (SmolLM2 does so before
    digits), move that space to the end of the prompts so that answers differ in their first token."""
    from ..scoring import encode_continuation
    answers = [row["answer"], row["corrupted_answer"], *(row.get("choices") or [])]
    space = encode_continuation(tok, " ")
    if not all(a.startswith(" ") and encode_continuation(tok, a)[: len(space)] == space for a in answers):
        return row
    out = dict(row, prompt=row["prompt"] + " ", corrupted_prompt=row["corrupted_prompt"] + " ",
               answer=row["answer"][1:], corrupted_answer=row["corrupted_answer"][1:])
    if row.get("choices"):
        out["choices"] = [c[1:] for c in row["choices"]]
    return out


def _pair_usable(tok, row: dict[str, Any], ctx: GenContext) -> bool:
    from ..scoring import encode_continuation
    return (ctx.n_tokens(row["prompt"]) == ctx.n_tokens(row["corrupted_prompt"])
            and encode_continuation(tok, row["answer"])[:1] != encode_continuation(tok, row["corrupted_answer"])[:1])


def check_spec(name: str, spec: dict[str, Any], *, file: str | None = None) -> Callable:
    """The generator or loader of data set ``name``, after checking its name and option keys."""
    key = "generator" if "generator" in spec else "loader"
    registry = GENERATORS if key == "generator" else LOADERS
    fn = registry.get(spec[key], file=file, field=f"datasets.{name}.{key}")
    registry.check_options(spec[key], spec.get("options", {}), file=file, field=f"datasets.{name}.options")
    return fn


def build_set(name: str, spec: dict[str, Any], tokenizer, *, seed: int) -> pd.DataFrame:
    """Rows for data set ``name`` as configured by ``spec`` (one entry of the config's ``datasets``).

    Generators propose rows endlessly; proposals that are not token-aligned, or whose answers share their
    first token, are skipped. Loaders read real data; the same checks apply, and loaders raise when a file is
    unusable. The first ``n`` usable, distinct rows are kept and split by ``splits`` fractions (``validation`` of
    the non-circuit rows carved out first), row by row or (``split_by: fact``) fact by fact.
    """
    fn = check_spec(name, spec)
    rng = random.Random(f"{seed}:{name}")
    ctx = GenContext(tokenizer=tokenizer, rng=rng, options=dict(spec.get("options", {})), name=name)
    n = int(spec["n"])
    rows, seen = [], set()
    proposals = islice(fn(ctx), n * MAX_PROPOSALS_PER_ROW)
    with tqdm(total=n, desc=f"data {name}", unit="row", leave=False) as bar:
        for row in proposals:
            row = _shift_shared_space(tokenizer, row)
            key = (row["prompt"], row["answer"])
            if key in seen or not _pair_usable(tokenizer, row, ctx):
                continue
            seen.add(key)
            rows.append(row)
            bar.update()
            if len(rows) == n:
                break
    if not rows:
        raise ClueflowError("no usable (token-aligned) examples could be built", field=f"datasets.{name}")
    fractions = split_fractions(spec)
    bounds, acc = {}, 0
    for split in SPLITS[:-1]:
        acc += round(fractions[split] * len(rows))
        bounds[split] = acc
    split_of = lambda rank: next((s for s in SPLITS[:-1] if rank < bounds[s]), SPLITS[-1])  # noqa: E731
    if spec.get("split_by", "row") == "fact":  # a fact's rows share the split of its first row in the shuffled order
        facts: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            facts.setdefault(row.get("text") or row["prompt"], []).append(i)
        groups = list(facts.values())
        rng.shuffle(groups)
        rank = 0
        for group in groups:
            for i in group:
                rows[i]["split"] = split_of(rank)
            rank += len(group)
    else:
        order = list(range(len(rows)))
        rng.shuffle(order)
        for rank, i in enumerate(order):
            rows[i]["split"] = split_of(rank)
    for i, row in enumerate(rows):
        row["id"] = f"{name}-{i:04d}"
    return to_frame(rows)


def split_fractions(spec: dict[str, Any]) -> dict[str, float]:
    """The share of a set's rows in each split: ``splits`` over the defaults, with ``validation`` (a share of the
    non-circuit rows) taken from train and test alike."""
    fractions = {**DEFAULT_SPLITS, **spec.get("splits", {})}
    validation = spec.get("validation", 0)
    fractions.update(train=fractions["train"] * (1 - validation), validation=validation * (1 - fractions["circuit"]))
    return fractions


def write_set(name: str, spec: dict[str, Any], tokenizer, out: str | Path, *, seed: int) -> pd.DataFrame:
    df = build_set(name, spec, tokenizer, seed=seed)
    validate_frame(df, file=out, tokenizer=tokenizer)
    source = {k: spec[k] for k in ("generator", "loader") if k in spec}
    write_parquet(out, df, metadata=dict(set=name, seed=seed, n_requested=int(spec["n"]), n=len(df),
                                         options=spec.get("options", {}), tokenizer=tokenizer.name_or_path,
                                         **source))
    return df
