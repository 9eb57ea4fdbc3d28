"""Evaluation of one model (an unlearned checkpoint, or the base model as ``origin``) on one forget/retain pair.

Per-example artifact ``results/eval/{model}/{run}/seed{seed}/{forget}__{retains}.parquet``:

============  ========  ===========================================================================================
column        type      meaning
============  ========  ===========================================================================================
subset        string    ``forget`` (the rows that were unlearned), ``forget_heldout`` (the forget set's test split,
                        never trained on), ``retain`` (each retain set's test split), ``general`` (lm-eval tasks)
set           string    data set (or lm-eval task) name
id            string    row id (lm-eval: the document's ``id`` or index)
format        string    ``cloze``/``choice``/``mc``; lm-eval rows: the task name
correct       float     1.0 if answered correctly, else 0.0 (cloze: greedy continuation; choice/mc: highest
                        log-likelihood); ``general`` rows: the document's score under its lm-eval metric (a
                        fraction for truthfulqa_mc2)
loss          float     forget rows: mean token NLL of the row's ``text`` (MIA "loss" score is its negative)
min_k         float     forget rows: Min-k% Prob of ``text``
min_k_pp      float     forget rows: Min-k%++ of ``text``
generation    string    ``forget`` rows: greedy continuation of ``prompt`` (``max_new_tokens``)
rouge_l       float     ``forget`` rows: Rouge-L recall of ``generation`` against ``answer``
============  ========  ===========================================================================================

Summary ``….json``: run, pair, seed, the aggregates below, per-set accuracies, MIA AUCs and wall seconds.

* ``forget_efficacy`` = 1 − accuracy on the ``forget`` rows (also ``fe_mc``, ``fe_cloze``, ``fe_heldout``);
* ``retain_utility`` = accuracy on the retain sets' test rows (pooled);
* ``general_utility`` = mean over general tasks of each task's score (built-in sets: both of its kinds pooled; an
  lm-eval group such as ``mmlu`` is one task, scored by its own aggregate: :mod:`clueflow.evaluate.lmeval`), over
  the tasks of ``general_sets`` only: ``general_left_out`` names each set left out and why
  (``evaluate.general_band``: :mod:`clueflow.evaluate.band`), which is not scored at all (its rows would cost
  a third of the evaluation and count nowhere); ``general_per_set`` scores every task GU counts;
* ``mia_auc_{min_k,loss,min_k_pp}`` over the unique texts, higher = the unlearned texts judged non-members
  (:mod:`clueflow.evaluate.metrics` for the convention); ``rouge_l`` the mean Rouge-L recall of the unlearned
  rows' generations and ``one_minus_rouge_l`` = 1 − that (higher = better forgetting, as the paper's Table 6);
* ``unlearned_parameter`` = the paper's definition measured on the weights: mean over the maskable weight matrices
  of the share of entries that differ from the base model (0 for ``origin``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..anatomy import ARCHITECTURES
from ..circuits.graph import build_graph
from ..config import default
from ..data.filter import correctness
from ..data.schema import pair_of_files, read_set, set_name
from ..devices import autocast as amp, model_device
from ..errors import ClueflowError
from ..io import write_json, write_parquet
from ..masks import maskable, matrices
from ..models import CheckpointTensors, load_model, load_tokenizer
from ..scoring import encode_prompt, pad_id, padded
from ..unlearn.run import forget_rows
from .band import left_out
from .lmeval import evaluate_general
from .metrics import auc, min_k_plus_plus, min_k_prob, rouge_l_recall

COLUMNS = ["subset", "set", "id", "format", "correct", "loss", "min_k", "min_k_pp", "generation", "rouge_l"]


@torch.no_grad()
def text_scores(model, tok, texts: list[str], *, k: float, batch_size: int = 32) -> list[dict[str, float]]:
    """Per text: mean token NLL, Min-k% and Min-k%++ (tokens after the first, under the scoring encoding)."""
    encoded = [encode_prompt(tok, t) for t in texts]
    device = model_device(model)
    out = []
    for start in tqdm(range(0, len(encoded), batch_size), desc="mia", unit="batch", leave=False):
        chunk = encoded[start:start + batch_size]
        ids, mask = (t.to(device) for t in padded(chunk, pad_id(tok)))
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        probs = logp.exp()
        mu = (probs * logp).sum(-1)
        sigma = ((probs * logp.square()).sum(-1) - mu.square()).clamp_min(0).sqrt()
        mu, sigma = mu.cpu(), sigma.cpu()  # [b, s]: read per token below
        for row, s in enumerate(chunk):
            n = len(s) - 1
            if n < 1:
                raise ValueError(f"text {texts[start + row]!r} has fewer than two tokens")
            lp = logp[row, :n].gather(1, torch.tensor(s[1:], device=device)[:, None])[:, 0].cpu()
            out.append(dict(loss=float(-lp.mean()), min_k=min_k_prob(lp.tolist(), k),
                            min_k_pp=min_k_plus_plus(lp.tolist(), mu[row, :n].tolist(), sigma[row, :n].tolist(), k)))
    return out


@torch.no_grad()
def greedy_generations(model, tok, prompts: list[str], *, max_new_tokens: int, batch_size: int = 32) -> list[str]:
    """Greedy continuations, left-padded batches, decoded without special tokens."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    device = model_device(model)
    out = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch", leave=False):
        ids, mask = (t.to(device) for t in padded([encode_prompt(tok, p) for p in prompts[start:start + batch_size]],
                                                  pad, left=True))
        width = ids.shape[1]
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=pad)
        out += tok.batch_decode(gen[:, width:].cpu(), skip_special_tokens=True)
    return out


def unlearned_parameter(model, base) -> float:
    """Mean over the maskable weight matrices (each expert's its own) of the share of entries that differ from ``base``; for an
    architecture the circuit graph does not describe (only full-parameter runs train it), over every weight matrix
    outside the embeddings. ``base``: a model on any device (the CPU, so that a GPU never holds two models), or its
    tensors by name (:class:`..models.CheckpointTensors`: read one at a time); each of its matrices is compared on
    ``model``'s device, one at a time."""
    if model.config.model_type in ARCHITECTURES.names():
        params = maskable(model, build_graph(model))
    else:
        embeddings = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
        if model.get_output_embeddings() is not None:
            embeddings.add(id(model.get_output_embeddings().weight))
        params = {name: p for name, p in model.named_parameters() if id(p) not in embeddings}
    base_params = dict(base.named_parameters()) if isinstance(base, nn.Module) else base
    shares = [float((a != b.to(a.device)).float().mean())
              for name, p in params.items() for a, b in zip(matrices(p), matrices(base_params[name]))]
    return float(np.mean(shares)) if shares else 0.0


def labelled(path: str | Path) -> pd.DataFrame:
    """The set at ``path`` with its name in column ``set``."""
    return read_set(path).assign(set=set_name(path))


def test_rows(forget_path: str | Path, retain_paths: list[str | Path], *, forget_ratio: float, seed: int,
              heldout_path: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """The rows an evaluation scores, by subset: ``forget`` (the rows training drew from ``forget_path`` with
    ``seed``), ``forget_heldout`` (the test split of ``heldout_path``, default the same file) and ``retain`` (each
    retain set's test split). A subset without rows is a user error naming its file."""
    full = labelled(forget_path)
    heldout_path = forget_path if heldout_path is None else heldout_path
    held = full if heldout_path == forget_path else labelled(heldout_path)
    if held["set"].iloc[0] != full["set"].iloc[0]:
        raise ClueflowError(f"set {held['set'].iloc[0]!r}, not the forget set {full['set'].iloc[0]!r}",
                            file=heldout_path, field="set")
    heldout = held[held["split"] == "test"]
    if heldout.empty:
        raise ClueflowError("no rows in the test split (held-out forget rows)", file=heldout_path, field="split")
    retain = pd.concat([labelled(p)[lambda d: d["split"] == "test"] for p in retain_paths])
    if retain.empty:
        raise ClueflowError("no rows in the test split of any retain set", file=retain_paths[0], field="split")
    return dict(forget=forget_rows(full, forget_ratio, seed), forget_heldout=heldout, retain=retain)


def score_subsets(model, tok, subsets: dict[str, pd.DataFrame], *, batch_size: int) -> pd.DataFrame:
    """Every row of every subset scored in one pass (:func:`clueflow.data.filter.correctness`): columns subset,
    set, id, format, correct, in the subsets' order."""
    scored = pd.concat(subsets.values(), ignore_index=True)
    ok = correctness(model, tok, scored, batch_size=batch_size, corrupted=False)["correct"]
    return pd.DataFrame(dict(subset=np.repeat(list(subsets), [len(d) for d in subsets.values()]), set=scored["set"],
                             id=scored["id"], format=scored["format"], correct=ok.to_numpy().astype(float)))


def general_rows(model, tok, general_paths: dict[str, str | Path], standard_tasks: list[str], *,
                 general_accuracy: dict[str, str | Path] | None = None, general_band: dict[str, float] | None = None,
                 batch_size: int = default("evaluate.batch_size"), limit: int | None = None,
                 metrics: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict[str, float], dict[str, str]]:
    """The general-utility rows (subset ``general``) through lm-eval, each task's score, and the tasks left out
    with the reason (``evaluate.general_band``: :mod:`.band`; those are not scored at all)."""
    dropped = left_out([*general_paths, *standard_tasks], general_accuracy or {}, **(general_band or {}))
    sets = {name: read_set(p) for name, p in general_paths.items() if name not in dropped}
    general, scores = evaluate_general(model, tok, sets, list(standard_tasks), batch_size=batch_size, limit=limit,
                                       metrics=metrics)
    frame = pd.DataFrame(dict(subset="general", set=general["set"], id=general["id"], format=general["task"],
                              correct=general["correct"]))
    return frame, scores, dropped


def evaluate_model(model_dir: str | Path, base_dir: str | Path, forget_path: str | Path,
                   retain_paths: list[str | Path], general_paths: dict[str, str | Path], out_parquet: str | Path,
                   out_json: str | Path, *, run: str, forget_ratio: float, seed: int = 0,
                   heldout_path: str | Path | None = None,
                   standard_tasks: list[str] = (), k: float = default("evaluate.k"),
                   max_new_tokens: int = default("evaluate.max_new_tokens"),
                   batch_size: int = default("evaluate.batch_size"), general_limit: int | None = None,
                   metrics: dict[str, str] | None = None,
                   general_accuracy: dict[str, str | Path] | None = None,
                   general_band: dict[str, float] | None = None,
                   dtype: str = default("model.dtype"), device: str = default("model.device"),
                   trust_remote_code: bool = False, autocast: str | None = default("model.autocast")
                   ) -> dict[str, Any]:
    """Every model computation (scoring, generation, MIA, lm-eval) runs on ``device`` in ``dtype`` (its forward
    passes under ``torch.autocast`` in ``autocast``: ``model.autocast``); the base model, read only for
    ``unlearned_parameter``, is read one tensor at a time from its files on the CPU. The unlearned forget rows come
    from ``forget_path`` (as training drew them), the held-out ones from the test split of ``heldout_path`` (default
    the same file; the unfiltered set under ``evaluate.filtered: false``). ``general_accuracy``: the base model's
    accuracy file of each built-in general set, which with ``general_band`` (``evaluate.general_band``) decides the
    sets GU averages (the others are not scored); without it every task counts."""
    started = time.perf_counter()
    tok = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    rows = test_rows(forget_path, retain_paths, forget_ratio=forget_ratio, seed=seed, heldout_path=heldout_path)
    forget, heldout = rows["forget"], rows["forget_heldout"]

    model = load_model(model_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    with amp(model_device(model), autocast):  # model.autocast: every forward pass below
        table = score_subsets(model, tok, rows, batch_size=batch_size)
        n_f = len(forget)
        frames = [table[table["subset"] == s].reset_index(drop=True) for s in rows]

        # MIA on unique texts (rows of one fact share a text); generation + Rouge-L on the unlearned rows
        texts = [t if isinstance(t, str) and t else p + a for t, p, a in
                 zip(pd.concat([forget, heldout])["text"], pd.concat([forget, heldout])["prompt"],
                     pd.concat([forget, heldout])["answer"])]
        unique = list(dict.fromkeys(texts))
        by_text = dict(zip(unique, text_scores(model, tok, unique, k=k, batch_size=batch_size)))
        for frame, chunk in ((frames[0], texts[:n_f]), (frames[1], texts[n_f:])):
            for key in ("loss", "min_k", "min_k_pp"):
                frame[key] = [by_text[t][key] for t in chunk]
        frames[0]["generation"] = greedy_generations(model, tok, list(forget["prompt"]),
                                                     max_new_tokens=max_new_tokens, batch_size=batch_size)
        frames[0]["rouge_l"] = [rouge_l_recall(g, a) for g, a in zip(frames[0]["generation"], forget["answer"])]

        general, general_scores, dropped = general_rows(model, tok, general_paths, list(standard_tasks),
                                                        general_accuracy=general_accuracy,
                                                        general_band=general_band, batch_size=batch_size,
                                                        limit=general_limit, metrics=metrics)
    frames.append(general)

    if Path(model_dir).resolve() == Path(base_dir).resolve():
        share = 0.0
    else:
        base = CheckpointTensors(base_dir, dtype)  # tensor by tensor: the host never holds the base model
        if not set(dict(model.named_parameters())) <= set(base):  # its file names tensors otherwise
            base = load_model(base_dir, dtype=dtype, device="cpu", trust_remote_code=trust_remote_code)
        share = unlearned_parameter(model, base)

    table = pd.concat(frames, ignore_index=True).reindex(columns=COLUMNS).astype({"correct": float})
    summary = summarize(table, general_scores, member_texts=set(texts[:n_f]), texts=texts, by_text=by_text,
                        general_left_out=dropped)
    pair = pair_of_files(forget_path, retain_paths)
    summary.update(run=run, pair=pair, seed=seed, unlearned_parameter=share,
                   seconds=round(time.perf_counter() - started, 2))
    write_parquet(out_parquet, table, metadata=dict(run=run, model_dir=str(model_dir), k=k, seed=seed))
    write_json(out_json, summary)
    return summary


def accuracies(table: pd.DataFrame, general: dict[str, float],
               general_left_out: dict[str, str] | None = None) -> dict[str, Any]:
    """FE (on the unlearned rows, per format, held out), RU (pooled and per retain set) and GU of a table of
    scored rows (columns subset, set, format, correct); ``general``: each general task's score."""
    general_left_out = general_left_out or {}
    used = [t for t in general if t not in general_left_out]

    def acc(mask) -> float:
        rows = table[mask]
        return float(rows["correct"].astype(bool).mean()) if len(rows) else float("nan")

    sub = table["subset"]
    retain = table[sub == "retain"].groupby("set")["correct"].mean().astype(float)
    return dict(forget_efficacy=1 - acc(sub == "forget"),
                fe_mc=1 - acc((sub == "forget") & (table["format"] == "mc")),
                fe_cloze=1 - acc((sub == "forget") & (table["format"] == "cloze")),
                fe_heldout=1 - acc(sub == "forget_heldout"),
                retain_utility=acc(sub == "retain"), retain_per_set=retain.to_dict(),
                general_utility=float(np.mean([general[t] for t in used])) if used else float("nan"),
                general_per_set=dict(sorted(general.items())), general_sets=sorted(used),
                general_left_out=dict(sorted(general_left_out.items())))


def summarize(table: pd.DataFrame, general: dict[str, float], *, member_texts: set[str], texts: list[str],
              by_text: dict[str, dict[str, float]], general_left_out: dict[str, str] | None = None
              ) -> dict[str, Any]:
    """The summary of an evaluation ``table``; ``general``: each general task's score (:func:`evaluate_general`);
    ``general_left_out``: the tasks GU leaves out, with the reason (:func:`clueflow.evaluate.band.left_out`)."""
    sub = table["subset"]
    members = [by_text[t] for t in dict.fromkeys(texts) if t in member_texts]
    others = [by_text[t] for t in dict.fromkeys(texts) if t not in member_texts]
    out = dict(accuracies(table, general, general_left_out),
               rouge_l=float(table.loc[sub == "forget", "rouge_l"].mean()))
    out["one_minus_rouge_l"] = 1 - out["rouge_l"]
    for key, sign in (("min_k", -1), ("loss", 1), ("min_k_pp", -1)):  # every score: higher = more non-member-like
        out[f"mia_auc_{key}"] = auc([sign * m[key] for m in members], [sign * o[key] for o in others])
    return out
