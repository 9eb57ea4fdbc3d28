"""The data-set artifact: ``results/data/{model}/{set}.parquet``, one row per example.

=================  ==============  =============================================================================
column             type            meaning
=================  ==============  =============================================================================
id                 string          ``<set>-<nnnn>``, unique within the file
split              string          ``circuit`` (circuit discovery), ``train`` (unlearning / fine-tuning),
                                   ``validation`` (the lr search, only where ``datasets.<name>.validation`` > 0) or
                                   ``test``
format             string          ``cloze``: correct iff the model's greedy continuation is ``answer``;
                                   ``choice``: ``choices`` scored by log-likelihood after the prompt (options not
                                   shown in the prompt); ``mc``: options listed in the prompt, ``choices`` holds
                                   the scored continuations (option texts, or letters `` A``..`` D``)
prompt             string          clean input
answer             string          continuation scored as correct, exactly as appended (leading space included)
corrupted_prompt   string          counterfactual input, **same token count** as ``prompt`` under the model's
                                   tokenizer (:func:`clueflow.scoring.encode_prompt`)
corrupted_answer   string          the answer to ``corrupted_prompt``; its first token differs from ``answer``'s
choices            list<string>    ``choice``/``mc`` rows: the candidate continuations; null for ``cloze``
label              int64           ``choice``/``mc`` rows: index of ``answer`` in ``choices``; null for ``cloze``
text               string          forget corpora: the text trained on by GA/NPO and scored by MIA; else null
refusal            string          forget corpora: the refusal target for PO (``prompt`` + ``refusal``); else null
subject            string          optional: the entity a factual row is about, a substring of ``prompt`` (MEMIT's
                                   KL prompts "{subject} is a"); null, or no column, where there is none
=================  ==============  =============================================================================

File metadata (parquet schema key ``clueflow``): set name, source (generator or loader), seed, tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ClueflowError
from ..io import read_table
from ..scoring import encode_continuation, encode_prompt

SPLITS = ("circuit", "train", "validation", "test")
FORMATS = ("cloze", "choice", "mc")
COLUMNS = ("id", "split", "format", "prompt", "answer", "corrupted_prompt", "corrupted_answer", "choices", "label",
           "text", "refusal")
OPTIONAL = ("subject",)  # written by every build; a file without them is still valid
REQUIRED_STR = ("id", "split", "format", "prompt", "answer", "corrupted_prompt", "corrupted_answer")
MAX_PROMPT_CHARS = 8192  # a longer prompt is almost surely not a benchmark item (and would be a huge allocation)
MIN_TEXT_CHARS = 8  # MIA and GA score the text's tokens after the first: a few characters give no signal


def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows (dicts with any subset of the optional columns) → a frame with exactly :data:`COLUMNS` and
    :data:`OPTIONAL`."""
    df = pd.DataFrame(rows)
    for col in (*COLUMNS, *OPTIONAL):
        if col not in df:
            df[col] = None
    df = df[[*COLUMNS, *OPTIONAL]]
    df["label"] = df["label"].astype("Int64")
    df["choices"] = [list(c) if isinstance(c, (list, tuple)) else None for c in df["choices"]]
    return df


def validate_frame(df: pd.DataFrame, *, file: str | Path, tokenizer=None) -> None:
    """Raise a one-line :class:`ClueflowError` naming ``file``, the row and the field for the first defect.

    With a tokenizer, also check token alignment of every counterfactual pair and that answer and corrupted
    answer differ in their first token (the logit-difference metric needs it).
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ClueflowError(f"missing column(s) {missing}", file=file, field="columns")
    if len(df) == 0:
        raise ClueflowError("data set is empty", file=file, field="rows")
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise ClueflowError(f"duplicate id {dup.iloc[0]!r}", file=file, field="id")
    for row in df.itertuples(index=False):
        where = f"row {row.id}"
        for col in REQUIRED_STR:
            value = getattr(row, col)
            if not isinstance(value, str) or not value:
                raise ClueflowError(f"{where}: must be a non-empty string, got {value!r}", file=file, field=col)
            if col in ("prompt", "corrupted_prompt") and not value.strip():
                raise ClueflowError(f"{where}: the prompt is blank", file=file, field=col)
            if col in ("prompt", "corrupted_prompt") and len(value) > MAX_PROMPT_CHARS:
                raise ClueflowError(f"{where}: {len(value)} characters, more than the {MAX_PROMPT_CHARS} allowed",
                                    file=file, field=col)
        for col in ("text", "refusal"):
            value = getattr(row, col)
            if value is not None and not (isinstance(value, float) and pd.isna(value)):
                if not isinstance(value, str):
                    raise ClueflowError(f"{where}: must be a string or null, got {value!r}", file=file, field=col)
                if col == "text" and len(value.strip()) < MIN_TEXT_CHARS:
                    raise ClueflowError(f"{where}: text {value!r} is too short to score (< {MIN_TEXT_CHARS} "
                                        f"characters)", file=file, field=col)
        subject = getattr(row, "subject", None)
        if subject is not None and not (isinstance(subject, float) and pd.isna(subject)):
            if not isinstance(subject, str) or not subject.strip() or subject not in row.prompt:
                raise ClueflowError(f"{where}: subject {subject!r} is not a non-empty part of the prompt", file=file,
                                    field="subject")
        if row.split not in SPLITS:
            raise ClueflowError(f"{where}: {row.split!r} is not one of {SPLITS}", file=file, field="split")
        if row.format not in FORMATS:
            raise ClueflowError(f"{where}: {row.format!r} is not one of {FORMATS}", file=file, field="format")
        if row.format == "cloze":
            if row.choices is not None or not pd.isna(row.label):
                raise ClueflowError(f"{where}: cloze rows carry no choices/label", file=file, field="choices")
        else:
            choices = list(row.choices) if row.choices is not None else []
            if len(choices) < 2:
                raise ClueflowError(f"{where}: {row.format} rows need >= 2 choices", file=file, field="choices")
            if pd.isna(row.label) or float(row.label) != int(row.label):
                raise ClueflowError(f"{where}: label {row.label} is not an integer", file=file, field="label")
            if not 0 <= int(row.label) < len(choices):
                raise ClueflowError(f"{where}: label {int(row.label)} out of range for {len(choices)} choices",
                                    file=file, field="label")
            if choices[int(row.label)] != row.answer:
                raise ClueflowError(f"{where}: answer {row.answer!r} != choices[label] {choices[int(row.label)]!r}",
                                    file=file, field="answer")
            if row.corrupted_answer not in choices:
                raise ClueflowError(f"{where}: corrupted_answer {row.corrupted_answer!r} is not among the choices",
                                    file=file, field="corrupted_answer")
        if tokenizer is not None:
            n_clean = len(encode_prompt(tokenizer, row.prompt))
            n_corr = len(encode_prompt(tokenizer, row.corrupted_prompt))
            if n_clean != n_corr:
                raise ClueflowError(f"{where}: counterfactual not token-aligned: prompt has {n_clean} tokens, "
                                    f"corrupted_prompt has {n_corr}", file=file, field="corrupted_prompt")
            if encode_continuation(tokenizer, row.answer)[:1] == encode_continuation(tokenizer,
                                                                                   row.corrupted_answer)[:1]:
                raise ClueflowError(f"{where}: answer {row.answer!r} and corrupted_answer {row.corrupted_answer!r} "
                                    "start with the same token", file=file, field="corrupted_answer")


def read_set(path: str | Path, *, tokenizer=None) -> pd.DataFrame:
    df = read_table(path, what="data set")
    validate_frame(df, file=path, tokenizer=tokenizer)
    return df


def pair_of_files(forget_path: str | Path, retain_paths) -> str:
    """The pair name of a forget set file and its retain set files (from their metadata)."""
    from ..layout import pair_name

    return pair_name(set_name(forget_path), [set_name(p) for p in retain_paths])


def set_name(path: str | Path) -> str:
    """The data set's name, as recorded in the file's metadata when it was built (never taken from the path)."""
    from ..io import read_parquet_metadata

    name = read_parquet_metadata(path).get("set")
    if not isinstance(name, str) or not name:
        raise ClueflowError("no set name in the file's metadata (rebuild the data set)", file=path, field="set")
    return name
