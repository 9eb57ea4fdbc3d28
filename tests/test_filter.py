import json

import pandas as pd
import pytest
import torch

from clueflow.data.build import build_set, write_set
from clueflow.data.filter import accuracy_table, correctness, filter_set, run_filter
from clueflow.data.schema import read_set
from clueflow.models import load_model, load_tokenizer
from clueflow.scoring import encode_continuation, encode_prompt, score_continuations


@pytest.fixture(scope="module")
def tiny(tiny_dirs):
    return load_model(tiny_dirs["llama"]), load_tokenizer(tiny_dirs["llama"])


def test_batched_scores_match_unbatched_computation(tiny):
    model, tok = tiny
    requests = [("The capital of France is", " Paris"), ("a", " bc"), ("When John and Mary went", " home now")]
    scored = score_continuations(model, tok, requests, batch_size=2)
    for (prompt, cont), s in zip(requests, scored):
        p, c = encode_prompt(tok, prompt), encode_continuation(tok, cont)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p + c])).logits[0], -1)
        rows = logp[len(p) - 1: len(p) + len(c) - 1]
        assert s.logprob == pytest.approx(float(rows[torch.arange(len(c)), c].sum()), abs=1e-4)
        assert s.greedy == bool((rows.argmax(-1) == torch.tensor(c)).all())


def _greedy_continuation(model, tok, prompt, n):
    ids = torch.tensor([encode_prompt(tok, prompt)])
    out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:])


def test_filter_keeps_exactly_what_the_model_gets_right(tiny, byte_tok):
    model, tok = tiny
    df = build_set("ioi", {"generator": "ioi", "n": 10}, byte_tok, seed=0)
    # cloze rows: make row 0 the model's own greedy continuation (correct), row 1 something else (wrong)
    df.loc[0, ["format", "choices", "label"]] = ["cloze", None, pd.NA]
    df.loc[0, "answer"] = _greedy_continuation(model, tok, df.loc[0, "prompt"], 2)
    df.loc[1, ["format", "choices", "label"]] = ["cloze", None, pd.NA]
    first = _greedy_continuation(model, tok, df.loc[1, "prompt"], 1)
    df.loc[1, "answer"] = " Zed" if first != "ĠZ" and not first.startswith(" Z") else " Amy"
    # choice rows: set the label to the model's own preference, so the expected outcome is known
    scores = score_continuations(model, tok, [(r.prompt, c) for r in df.iloc[2:].itertuples() for c in r.choices])
    for k, i in enumerate(range(2, len(df))):
        best = int(scores[2 * k].logprob < scores[2 * k + 1].logprob)
        want = best if i % 2 == 0 else 1 - best  # even rows right, odd rows wrong
        df.at[i, "label"], df.at[i, "answer"] = want, df.at[i, "choices"][want]
        df.at[i, "corrupted_answer"] = df.at[i, "choices"][1 - want]
    ok = correctness(model, tok, df)
    expected = [True, False] + [i % 2 == 0 for i in range(2, len(df))]
    assert ok["correct"].tolist() == expected
    kept, records = filter_set(model, tok, df, set_name="ioi", keep="clean")
    assert kept["id"].tolist() == df["id"][ok["correct"]].tolist()
    by_fmt = {r["format"]: r for r in records}
    assert by_fmt["choice"]["chance"] == 0.5 and by_fmt["cloze"]["chance"] == 0.0
    assert by_fmt["all"]["kept"] == len(kept) and by_fmt["all"]["n"] == len(df)
    everything, _ = filter_set(model, tok, df, set_name="ioi", keep="all")
    both, _ = filter_set(model, tok, df, set_name="ioi", keep="both")
    assert len(everything) == len(df) and len(both) <= len(kept)


def test_run_filter_writes_kept_rows_and_accuracy(tiny_dirs, tmp_path):
    tok = load_tokenizer(tiny_dirs["llama"])
    data = tmp_path / "sentiment.parquet"
    write_set("sentiment", {"generator": "sentiment", "n": 16}, tok, data, seed=0)
    out, acc = tmp_path / "sentiment.filtered.parquet", tmp_path / "sentiment.accuracy.json"
    records = run_filter(data, tiny_dirs["llama"], out, acc, keep="clean", batch_size=4)
    assert json.loads(acc.read_text()) == records
    kept = read_set(out, tokenizer=tok) if records[0]["kept"] else pd.read_parquet(out)
    assert len(kept) == records[0]["kept"]
    table = accuracy_table([acc])
    assert list(table.columns) == ["set", "format", "n", "accuracy", "corrupted_accuracy", "chance", "kept"]
    assert table.loc[0, "n"] == 16 and 0.0 <= table.loc[0, "accuracy"] <= 1.0


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "gemma2", "gemma3_text", "phi3", "olmo2", "mixtral",
                                  "qwen3_moe", "opt"])
def test_options_scored_on_one_shared_prompt_pass_match_one_sequence_per_option(tiny_dirs, arch):
    """Continuations sharing a prompt run on one cached pass over it (left-padded prompts of different lengths,
    option counts that differ, multi-token options, a chunk boundary): each score equals the score of the option's
    own full sequence."""
    model, tok = load_model(tiny_dirs[arch]), load_tokenizer(tiny_dirs[arch])
    prompts = ["The capital of France is", "a", "When John and Mary went to the store, John gave a drink to",
               "Options: x, y.\nPick"]
    options = [[" Paris", " Rome", " New York City"], [" b", " bcd"], [" Mary", " John", " them all", " it"],
               [" x", " y"]]
    requests = [(p, c) for p, cs in zip(prompts, options) for c in cs] + [("alone here", " ok")]
    scored = score_continuations(model, tok, requests, batch_size=5)
    for (prompt, cont), s in zip(requests, scored):
        p, c = encode_prompt(tok, prompt), encode_continuation(tok, cont)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), -1)
        rows = logp[len(p) - 1: len(p) + len(c) - 1]
        assert s.n_tokens == len(c)
        assert s.logprob == pytest.approx(float(rows[torch.arange(len(c)), c].sum()), abs=1e-4)
        assert s.greedy == bool((rows.argmax(-1) == torch.tensor(c)).all())


def test_padded_by_hand():
    from clueflow.scoring import padded

    ids, mask = padded([[1, 2], [3]], 9)
    assert ids.tolist() == [[1, 2], [3, 9]] and mask.tolist() == [[1, 1], [1, 0]]
    ids, mask = padded([[1, 2], [3]], 9, left=True)
    assert ids.tolist() == [[1, 2], [9, 3]] and mask.tolist() == [[1, 1], [0, 1]]


@pytest.mark.parametrize("autocast", [None, "bfloat16"])
def test_rows_kept_by_the_filter_are_scored_correct_by_the_evaluation_at_its_precision(tiny_dirs, tmp_path, autocast):
    """The filter scores under the evaluation's autocast, so the base model's FE on the unlearned rows is 0."""
    from clueflow.evaluate.run import evaluate_model

    model_dir = tiny_dirs["llama"]
    tok = load_tokenizer(model_dir)
    spec = {"generator": "capitals", "n": 120, "splits": {"circuit": 0.1, "train": 0.6, "test": 0.3}}
    write_set("capitals", spec, tok, tmp_path / "capitals.parquet", seed=0)
    write_set("bool", {"generator": "bool", "n": 40}, tok, tmp_path / "bool.parquet", seed=0)
    run_filter(tmp_path / "capitals.parquet", model_dir, tmp_path / "kept.parquet", tmp_path / "acc.json",
               autocast=autocast)
    kept = read_set(tmp_path / "kept.parquet")
    n = int((kept["split"] == "train").sum())
    assert n > 0
    summary = evaluate_model(model_dir, model_dir, tmp_path / "kept.parquet", [tmp_path / "bool.parquet"], {},
                             tmp_path / "e.parquet", tmp_path / "e.json", run="origin", forget_ratio=n,
                             heldout_path=tmp_path / "capitals.parquet", autocast=autocast)
    assert summary["forget_efficacy"] == 0.0
