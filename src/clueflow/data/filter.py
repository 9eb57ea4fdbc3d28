"""Keep only the examples the base model answers correctly (as the paper does) and record its accuracy.

Correctness per format: ``cloze`` — every answer token is the model's argmax under teacher forcing (the greedy
continuation starts with the answer); ``choice``/``mc`` — the answer has the highest summed log-likelihood
among ``choices`` (lm-eval's ``acc``). The same test on ``corrupted_prompt``/``corrupted_answer`` gives the
corrupted accuracy, which the circuit stage relies on for the denoising direction.

Accuracy artifact (``results/data/{model}/{set}.accuracy.json``, gathered into ``base_accuracy.parquet``):
``set, format, n, accuracy, corrupted_accuracy, chance, kept``, one row per format plus ``format="all"``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..config import default
from ..devices import autocast as amp, model_device
from ..io import read_json, read_parquet_metadata, write_json, write_parquet
from ..models import load_model, load_tokenizer
from ..scoring import score_continuations
from .schema import read_set, set_name

KEEP_MODES = ("clean", "both", "all")


def _requests(df: pd.DataFrame, corrupted: bool) -> tuple[list[tuple[str, str]], list[tuple[int, int]]]:
    """Flatten rows into (prompt, continuation) requests; return them with each row's slice into the list."""
    prompt_col = "corrupted_prompt" if corrupted else "prompt"
    answer_col = "corrupted_answer" if corrupted else "answer"
    requests, spans = [], []
    for row in df.itertuples(index=False):
        prompt = getattr(row, prompt_col)
        conts = [getattr(row, answer_col)] if row.format == "cloze" else list(row.choices)
        spans.append((len(requests), len(requests) + len(conts)))
        requests += [(prompt, c) for c in conts]
    return requests, spans


def correctness(model, tok, df: pd.DataFrame, *, batch_size: int = 32, corrupted: bool = True) -> pd.DataFrame:
    """Per-row ``correct`` and ``corrupted_correct`` booleans, scored in one batched pass (without
    ``corrupted``, only ``correct``)."""
    clean_req, clean_spans = _requests(df, corrupted=False)
    corr_req, corr_spans = _requests(df, corrupted=True) if corrupted else ([], [(0, 0)] * len(df))
    scored = score_continuations(model, tok, clean_req + corr_req, batch_size=batch_size, desc="scoring")
    offset = len(clean_req)
    out = {"correct": [], "corrupted_correct": []}
    for row, (a, b), (c, d) in zip(df.itertuples(index=False), clean_spans, corr_spans):
        if row.format == "cloze":
            out["correct"].append(scored[a].greedy)
            out["corrupted_correct"].append(corrupted and scored[offset + c].greedy)
        else:
            clean_lp = [s.logprob for s in scored[a:b]]
            out["correct"].append(int(np.argmax(clean_lp)) == int(row.label))
            if corrupted:
                corr_lp = [s.logprob for s in scored[offset + c: offset + d]]
                out["corrupted_correct"].append(int(np.argmax(corr_lp)) == list(row.choices).index(row.corrupted_answer))
    return pd.DataFrame(out if corrupted else {"correct": out["correct"]}, index=df.index)


def filter_set(model, tok, df: pd.DataFrame, *, set_name: str, keep: str = "clean",
               batch_size: int = 32) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Return the kept rows (same schema) and accuracy records per format.

    ``keep``: ``clean`` keeps rows answered correctly; ``both`` also requires the corrupted prompt to be
    answered correctly; ``all`` keeps every row (accuracy is still recorded).
    """
    if keep not in KEEP_MODES:
        raise ValueError(f"keep must be one of {KEEP_MODES}")
    ok = correctness(model, tok, df, batch_size=batch_size)
    mask = {"clean": ok["correct"], "both": ok["correct"] & ok["corrupted_correct"],
            "all": pd.Series(True, index=df.index)}[keep]
    chance = df.apply(lambda r: 0.0 if r.format == "cloze" else 1.0 / len(r.choices), axis=1)
    records = []
    for fmt, idx in [("all", df.index), *df.groupby("format").groups.items()]:
        if fmt == "all" and df["format"].nunique() == 1:
            continue
        records.append(dict(set=set_name, format=fmt, n=len(idx), accuracy=float(ok.loc[idx, "correct"].mean()),
                            corrupted_accuracy=float(ok.loc[idx, "corrupted_correct"].mean()),
                            chance=float(chance.loc[idx].mean()), kept=int(mask.loc[idx].sum())))
    return df[mask].reset_index(drop=True), records


def run_filter(data_path: str | Path, model_dir: str | Path, out_path: str | Path, accuracy_path: str | Path, *,
               keep: str = default("filter.keep"), batch_size: int = default("filter.batch_size"),
               dtype: str = default("model.dtype"), device: str = default("model.device"),
               trust_remote_code: bool = False, autocast: str | None = default("model.autocast")
               ) -> list[dict[str, Any]]:
    """File-level filter step: read a data set, score it with the model (on ``device``, its forward passes under
    ``autocast`` as the evaluation's, so that a row kept as answered correctly is one the evaluation scores
    correct: the base model's FE on the unlearned rows is 0), write kept rows + accuracy JSON."""
    tok = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    df = read_set(data_path, tokenizer=tok)
    model = load_model(model_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    with amp(model_device(model), autocast):
        kept, records = filter_set(model, tok, df, set_name=set_name(data_path), keep=keep, batch_size=batch_size)
    if kept.empty:  # recorded, not fatal: the set still has a base accuracy; a stage that reads it will refuse
        print(f"warning: {data_path}: the base model answers no example correctly (keep={keep})")
    write_parquet(out_path, kept, metadata={**read_parquet_metadata(data_path), "filter": keep,
                                            "n_before_filter": len(df), "n": len(kept)})
    write_json(accuracy_path, records)
    return records


def accuracy_table(accuracy_paths: Iterable[str | Path]) -> pd.DataFrame:
    records = [r for p in accuracy_paths for r in read_json(p)]
    return pd.DataFrame(records, columns=["set", "format", "n", "accuracy", "corrupted_accuracy", "chance", "kept"])
