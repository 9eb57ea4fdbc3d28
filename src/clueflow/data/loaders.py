"""Loaders for the paper's real data sets, used when a user has them (hub name or local parquet/jsonl files).

A loader has the same interface as a generator, ``(ctx) -> Iterator[row dict]``, with its inputs in
``ctx.options``: ``path`` for a local ``.parquet``, ``.jsonl`` or ``.json`` (JSON lines, or an array of records)
file, or ``hub`` + ``hub_config`` + ``hub_split`` for a Hugging Face data set (needs the optional ``datasets``
package). Rows are read in file order and shuffled with ``ctx.rng``, so a set is a pure function of (data,
options, seed, tokenizer). Loaders propose rows without ``id``/``split`` (:func:`~clueflow.data.build.build_set`
assigns them and drops proposals that are not token-aligned or whose answers share their first token).

Counterfactuals are token-aligned, which fixes the official CLUE code's data bugs (spec A.3.4):

* ``wmdp`` / ``mmlu`` (``mc``): letter scoring swaps the correct option with another one, so the answer letter
  changes; text scoring replaces the correct option with an option from the *other* WMDP subset (CLUE's idea,
  with the bio/cyber mix-up fixed: the distractor subset is explicit and must differ from the one built).
* ``sst2`` / ``rte`` (``choice``): another example of the opposite label whose prompt has the same token count
  (CLUE's SST-2 pairs were not aligned).
* ``winogrande`` (``choice``): the two candidate names swapped inside the sentence; the ``answer`` field is the
  *string* ``"1"``/``"2"`` and is converted with ``int`` (CLUE compared it with ``1``, so its answer was always
  option 2).
* ``pku_saferlhf`` (``cloze``): another prompt of the same token count whose unsafe answer starts differently.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd

from ..errors import ClueflowError, first_line
from ..fetch import is_offline, offline_error
from ..registry import Registry
from ..scoring import encode_continuation
from . import wordlists as W
from .generators import LETTERS, mc_prompt

Row = dict[str, Any]
LOADERS: Registry[Callable[..., Iterator[Row]]] = Registry("loader")

WMDP_TOPICS = {"bio": "biology", "cyber": "cybersecurity"}  # lm-eval's wmdp_* task descriptions
WMDP_OTHER = {"bio": "cyber", "cyber": "bio"}
MC_SCORINGS = ("letter", "text")
SST2_CHOICES = (" negative", " positive")  # index = SST-2 label
RTE_CHOICES = (" True", " False")  # index = GLUE RTE label (0 = entailment)


# ----------------------------------------------------------------------------------------------------------
# input handling (shared by every loader)


def _field(ctx, key: str) -> str:
    """The config field of option ``key``; prefixed with ``datasets.<set>`` when the context knows the set."""
    return f"datasets.{ctx.name}.options.{key}" if ctx.name else f"options.{key}"



def _read_file(path: Path, field: str) -> pd.DataFrame:
    if not path.is_file():
        raise ClueflowError("data file does not exist", file=path, field=field)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".jsonl", ".json"):
        raise ClueflowError(f"unsupported file type {suffix!r} (expected .parquet, .jsonl or .json)", file=path,
                            field=field)
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        with path.open(encoding="utf-8") as f:
            is_array = f.read(4096).lstrip().startswith("[")  # a .json array of records, else JSON lines
        # dtype=False: keep strings such as Winogrande's "1"/"2" as they are
        return pd.read_json(path, lines=not is_array, dtype=False)
    except Exception as err:  # pyarrow and the JSON parser raise many types
        raise ClueflowError(f"cannot read the file ({type(err).__name__}: {first_line(err)})", file=path) from None


def _read_hub(ctx, prefix: str, default_config: str | None) -> pd.DataFrame:
    name = ctx.options[f"{prefix}hub"]
    config = ctx.options.get(f"{prefix}hub_config", default_config)
    split = ctx.options.get(f"{prefix}hub_split")
    field = _field(ctx, f"{prefix}hub")
    try:
        import datasets  # optional dependency, imported only when a hub data set is requested
    except ImportError:
        raise ClueflowError(f"cannot load {name!r}: the `datasets` package is not installed (pip install datasets, "
                            f"or download the data and set {prefix}path)", field=field) from None
    try:
        ds = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # offline, unknown name/config/split, ...: all reported the same way
        if is_offline():
            raise offline_error(f"{name!r} (config {config!r}, split {split!r})", field, err) from None
        raise ClueflowError(f"cannot load {name!r} (config {config!r}, split {split!r}) from the Hugging Face hub: "
                            f"{type(err).__name__}: {first_line(err)}", field=field) from None
    if isinstance(ds, dict):  # a DatasetDict: no split was named
        if len(ds) != 1:
            raise ClueflowError(f"{name!r} has splits {sorted(ds)}; choose one",
                                field=_field(ctx, f"{prefix}hub_split"))
        ds = next(iter(ds.values()))
    return ds.to_pandas()


def _read(ctx, columns: Sequence[str | tuple[str, ...]], *, prefix: str = "", default_config: str | None = None,
          required: bool = True) -> list[Row] | None:
    """The records of the table named by options ``{prefix}path`` or ``{prefix}hub``, shuffled with ``ctx.rng``.

    ``columns`` lists the needed columns; a tuple gives accepted alternatives, stored under its first name. Each
    record holds exactly these columns. ``None`` when neither option is set and ``required`` is false.
    """
    path, hub = ctx.options.get(f"{prefix}path"), ctx.options.get(f"{prefix}hub")
    if path and hub:
        raise ClueflowError(f"set {prefix}path or {prefix}hub, not both", field=_field(ctx, f"{prefix}path"))
    if path:
        df, source = _read_file(Path(path).expanduser(), _field(ctx, f"{prefix}path")), str(path)
    elif hub:
        df, source = _read_hub(ctx, prefix, default_config), str(hub)
    elif required:
        raise ClueflowError(f"set {prefix}path (a local .parquet/.jsonl/.json file) or {prefix}hub (a Hugging Face "
                            "data set)", field=_field(ctx, f"{prefix}path"))
    else:
        return None
    names = {}
    for spec in columns:
        alternatives = (spec,) if isinstance(spec, str) else spec
        found = next((c for c in alternatives if c in df.columns), None)
        if found is None:
            raise ClueflowError(f"missing column {' or '.join(map(repr, alternatives))} "
                                f"(the file has {sorted(map(str, df.columns))})", file=source, field=alternatives[0])
        names[alternatives[0]] = found
    records = df[list(names.values())].set_axis(list(names), axis=1).to_dict("records")
    if not records:
        raise ClueflowError("the data set has no rows", file=source)
    ctx.rng.shuffle(records)
    return records


def _int(value) -> int | None:
    """``int(value)`` or None: labels arrive as ints, numpy ints or strings ("1"); missing/other → None."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("true", "1")


def _by_length(ctx, items: Sequence, text: Callable[[Any], str], key: Callable[[Any], Any] = lambda x: None):
    """``{(key(x), token count of text(x)): [x, ...]}``. Each text is tokenized once, so finding an aligned
    counterpart is a look-up plus one ``ctx.aligned_choice`` check instead of a scan over the data set."""
    groups = defaultdict(list)
    for x in items:
        groups[key(x), ctx.n_tokens(text(x))].append(x)
    return groups


# ----------------------------------------------------------------------------------------------------------
# multiple choice (WMDP, MMLU)


def _scoring(ctx) -> str:
    scoring = ctx.options.get("mc_scoring", "letter")
    if scoring not in MC_SCORINGS:
        raise ClueflowError(f"{scoring!r} is not one of {MC_SCORINGS}", field=_field(ctx, "mc_scoring"))
    return scoring


def _mc_prompt(topic: str, question: str, options: Sequence[str]) -> str:
    """lm-eval's ``wmdp_*`` / ``mmlu_*`` zero-shot prompt."""
    return f"The following are multiple choice questions (with answers) about {topic}.\n\n" + mc_prompt(question,
                                                                                                        options)


def _distractors(ctx, scoring: str, default_config: str | None) -> list[str] | None:
    """Option texts from ``distractor_path``/``distractor_hub`` (column ``choices``); read for text scoring only."""
    if scoring != "text":
        return None
    rows = _read(ctx, ["choices"], prefix="distractor_", default_config=default_config, required=False)
    return None if rows is None else [str(o) for r in rows for o in r["choices"]]


def _mc(ctx, rows: list[Row], topic: Callable[[Row], str], scoring: str, distractors: list[str] | None,
        *, forget: bool) -> Iterator[Row]:
    """``mc`` rows from records with ``question``, ``choices``, ``answer`` (index). Rows whose answer does not
    index the choices are skipped.

    * letter scoring: choices `` A``..; the counterfactual lists the same options with the correct one swapped
      with a random other option, so the corrupted answer is that option's letter (same tokens, permuted).
    * text scoring: choices are the option texts; the counterfactual replaces the correct option, in place, by
      a same-length option from ``distractors`` (the other WMDP subset; by default other questions' options),
      so the corrupted prompt no longer lists the right answer. No listed option answers it, so the corrupted
      answer is a *contrast target*: a random wrong option of the row whose first token differs from the
      answer's. The logit difference then measures how much the model's preference for the correct text rests on
      it being listed and recognised.
    """
    if scoring == "text":
        pool = distractors if distractors is not None else [str(o) for r in rows for o in r["choices"]]
        groups = _by_length(ctx, sorted(set(pool)), lambda o: f"\nA. {o}\n")
        first = lambda c: encode_continuation(ctx.tokenizer, c)[:1]  # noqa: E731
    texts = []
    if forget:
        corpus = _read(ctx, ["text"], prefix="corpus_", required=False) or []
        texts = [t for t in (r["text"] for r in corpus) if isinstance(t, str) and t.strip()]
    for i, r in enumerate(rows):
        options, label = [str(o) for o in r["choices"]], _int(r["answer"])
        if not 2 <= len(options) <= len(LETTERS) or label is None or not 0 <= label < len(options):
            continue
        question, about = str(r["question"]).strip(), topic(r)
        if scoring == "letter":
            choices = [f" {LETTERS[k]}" for k in range(len(options))]
            j = ctx.rng.choice([k for k in range(len(options)) if k != label])
            swapped = list(options)
            swapped[label], swapped[j] = options[j], options[label]
            corrupted_prompt, corrupted_answer = _mc_prompt(about, question, swapped), choices[j]
        else:
            choices = [f" {o}" for o in options]

            def replaced(d):
                return _mc_prompt(about, question, options[:label] + [d] + options[label + 1:])

            same_length = groups.get((None, ctx.n_tokens(f"\nA. {options[label]}\n")), [])
            d = ctx.aligned_choice(replaced, options[label], [o for o in same_length if o not in options])
            wrong = [c for k, c in enumerate(choices) if k != label and first(c) != first(choices[label])]
            if d is None or not wrong:
                continue
            corrupted_prompt, corrupted_answer = replaced(d), ctx.rng.choice(wrong)
        fact = {}
        if forget:
            text = texts[i % len(texts)] if texts else f"Question: {question}\nAnswer: {options[label]}"
            fact = dict(text=text, refusal=W.REFUSAL)
        yield dict(format="mc", prompt=_mc_prompt(about, question, options), answer=choices[label],
                   corrupted_prompt=corrupted_prompt, corrupted_answer=corrupted_answer, choices=choices,
                   label=label, **fact)


def _source(prefix: str) -> dict[str, type]:
    """The options naming a file or a hub data set (``<prefix>path``, ``<prefix>hub``, ...)."""
    return dict.fromkeys((f"{prefix}path", f"{prefix}hub", f"{prefix}hub_config", f"{prefix}hub_split"), str)


@LOADERS.register("wmdp", options={**_source(""), "subset": ("cyber", "bio"), "mc_scoring": MC_SCORINGS, "topic": str,
                                   **_source("distractor_"), **_source("corpus_")})
def wmdp(ctx) -> Iterator[Row]:
    """WMDP forget set. Columns ``question``, ``choices`` (4 option texts), ``answer`` (index).

    Options: ``subset`` (``cyber`` | ``bio``, required; sets the topic and the hub configs ``wmdp-<subset>`` and,
    for distractors, ``wmdp-<other subset>``), ``mc_scoring`` (``letter``, default, as lm-eval | ``text``),
    ``distractor_path``/``distractor_hub`` (+ ``distractor_hub_config``/``distractor_hub_split``): the *other*
    subset's questions, used by text scoring (without them, other questions of the same file are used),
    ``corpus_path``/``corpus_hub`` (column ``text``): forget corpus assigned to the rows' ``text`` (default
    ``"Question: {q}\\nAnswer: {correct option}"``), ``topic`` (overrides the prompt's topic).
    """
    o = ctx.options
    subset = o.get("subset")
    if subset not in WMDP_OTHER:
        raise ClueflowError(f"subset must be one of {sorted(WMDP_OTHER)}, got {subset!r}", field=_field(ctx, "subset"))
    other = WMDP_OTHER[subset]
    same_file = bool(o.get("path") and o.get("distractor_path")) and (
        Path(o["path"]).expanduser().resolve() == Path(o["distractor_path"]).expanduser().resolve())
    same_hub = bool(o.get("hub") and o.get("distractor_hub")) and (
        (o["hub"], o.get("hub_config", f"wmdp-{subset}")) == (o["distractor_hub"],
                                                              o.get("distractor_hub_config", f"wmdp-{other}")))
    if same_file or same_hub:
        raise ClueflowError(f"distractors must come from the other subset (wmdp-{other}), not from the set being "
                            "built", field=_field(ctx, "distractor_path" if same_file else "distractor_hub_config"))
    scoring = _scoring(ctx)
    rows = _read(ctx, ["question", "choices", "answer"], default_config=f"wmdp-{subset}")
    distractors = _distractors(ctx, scoring, f"wmdp-{other}")
    topic = o.get("topic", WMDP_TOPICS[subset])
    yield from _mc(ctx, rows, lambda r: topic, scoring, distractors, forget=True)


@LOADERS.register("mmlu", options={**_source(""), "mc_scoring": MC_SCORINGS, **_source("distractor_")})
def mmlu(ctx) -> Iterator[Row]:
    """MMLU. Columns ``question``, ``subject`` (``high_school_biology`` → topic "high school biology"),
    ``choices``, ``answer`` (index). Options ``mc_scoring`` and ``distractor_path``/``distractor_hub`` as for
    :func:`wmdp`; no forget text."""
    scoring = _scoring(ctx)
    rows = _read(ctx, ["question", "subject", "choices", "answer"])
    distractors = _distractors(ctx, scoring, None)
    yield from _mc(ctx, rows, lambda r: str(r["subject"]).replace("_", " "), scoring, distractors, forget=False)


# ----------------------------------------------------------------------------------------------------------
# two-way classification (SST-2, RTE) and Winogrande


def _binary_choice(ctx, items: list[tuple], prompt: Callable[[tuple], str], choices: Sequence[str]) -> Iterator[Row]:
    """``choice`` rows for ``(..., label)`` items; the counterfactual is an item of the other label whose prompt
    has the same token count."""
    groups = _by_length(ctx, items, prompt, key=lambda x: x[-1])
    for x in items:
        other = ctx.aligned_choice(prompt, x, groups.get((1 - x[-1], ctx.n_tokens(prompt(x))), []))
        if other is not None:
            yield dict(format="choice", prompt=prompt(x), answer=choices[x[-1]], corrupted_prompt=prompt(other),
                       corrupted_answer=choices[other[-1]], choices=list(choices), label=x[-1])


@LOADERS.register("sst2", options=_source(""))
def sst2(ctx) -> Iterator[Row]:
    """SST-2. Columns ``sentence``, ``label`` (1 = positive, 0 = negative; other labels, e.g. the test split's
    -1, are skipped). Prompt ``"Review: {sentence}\\nSentiment:"``, choices `` negative``/`` positive``."""
    rows = _read(ctx, ["sentence", "label"])
    items = [(str(r["sentence"]).strip(), _int(r["label"])) for r in rows]
    yield from _binary_choice(ctx, [x for x in items if x[0] and x[1] in (0, 1)],
                              lambda x: f"Review: {x[0]}\nSentiment:", SST2_CHOICES)


@LOADERS.register("rte", options=_source(""))
def rte(ctx) -> Iterator[Row]:
    """RTE. Columns ``premise`` (or GLUE's ``sentence1``), ``hypothesis`` (or ``sentence2``), ``label``
    (0 = entailment, 1 = not_entailment; others skipped). Prompt
    ``"{premise}\\nQuestion: {hypothesis} True or False?\\nAnswer:"``, choices `` True``/`` False``."""
    rows = _read(ctx, [("premise", "sentence1"), ("hypothesis", "sentence2"), "label"])
    items = [(str(r["premise"]).strip(), str(r["hypothesis"]).strip(), _int(r["label"])) for r in rows]
    yield from _binary_choice(ctx, [x for x in items if x[2] in (0, 1)],
                              lambda x: f"{x[0]}\nQuestion: {x[1]} True or False?\nAnswer:", RTE_CHOICES)


def _swap(text: str, a: str, b: str) -> str | None:
    """``text`` with the whole-word occurrences of ``a`` and ``b`` exchanged; None unless both occur."""
    pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in sorted((a, b), key=len, reverse=True))
                         + r")(?!\w)")
    if set(pattern.findall(text)) != {a, b}:
        return None
    return pattern.sub(lambda m: b if m.group(1) == a else a, text)


@LOADERS.register("winogrande", options=_source(""))
def winogrande(ctx) -> Iterator[Row]:
    """Winogrande. Columns ``sentence`` (with a ``_`` blank), ``option1``, ``option2``, ``answer`` (the *string*
    ``"1"``/``"2"`` on the hub; converted with ``int``, rows without an answer skipped).

    Prompt ``"{sentence}\\nIn this sentence, the _ refers to"``, choices `` {option1}``/`` {option2}``. The
    counterfactual swaps the two options inside the sentence, which flips the referent; rows where either option
    does not occur as a whole word are skipped. The swap keeps the token count when each option occurs equally
    often (or both tokenize to the same length); otherwise ``build_set`` drops the pair.
    """
    rows = _read(ctx, ["sentence", "option1", "option2", "answer"])
    prompt = lambda s: f"{s}\nIn this sentence, the _ refers to"  # noqa: E731
    for r in rows:
        sentence, o1, o2 = (str(r[k]).strip() for k in ("sentence", "option1", "option2"))
        answer = _int(r["answer"])  # "1" → 1; CLUE compared the string with 1 and always answered option2
        swapped = _swap(sentence, o1, o2) if o1 != o2 else None
        if answer not in (1, 2) or swapped is None:
            continue
        choices = [f" {o1}", f" {o2}"]
        yield dict(format="choice", prompt=prompt(sentence), answer=choices[answer - 1],
                   corrupted_prompt=prompt(swapped), corrupted_answer=choices[2 - answer], choices=choices,
                   label=answer - 1)


# ----------------------------------------------------------------------------------------------------------
# PKU-SafeRLHF


@LOADERS.register("pku_saferlhf", options=_source(""))
def pku_saferlhf(ctx) -> Iterator[Row]:
    """PKU-SafeRLHF forget set. Columns ``prompt``, ``response_0``, ``response_1``, ``is_response_0_safe``,
    ``is_response_1_safe``; rows without an unsafe response are skipped (if both are unsafe, one is drawn).

    ``cloze`` rows: prompt ``"Question: {prompt}\\nAnswer:"``, answer = the unsafe response's first word (with a
    leading space), ``text`` = prompt + the full unsafe response (trained on by GA/NPO), ``refusal`` = the
    standard refusal. The counterfactual is another row's prompt with the same token count whose answer starts
    with a different token; its answer is the corrupted answer.
    """
    rows = _read(ctx, ["prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe"])
    items = []  # (prompt, answer, answer's first token, text)
    for r in rows:
        unsafe = [r[f"response_{k}"].strip() for k in (0, 1)
                  if not _truthy(r[f"is_response_{k}_safe"]) and isinstance(r[f"response_{k}"], str)]
        unsafe = [u for u in unsafe if u]
        if not unsafe or not isinstance(r["prompt"], str) or not r["prompt"].strip():
            continue
        response, prompt = ctx.rng.choice(unsafe), f"Question: {r['prompt'].strip()}\nAnswer:"
        answer = " " + response.split()[0]
        items.append((prompt, answer, encode_continuation(ctx.tokenizer, answer)[:1], f"{prompt} {response}"))
    groups = _by_length(ctx, items, lambda x: x[0])
    for x in items:
        pool = [y for y in groups[None, ctx.n_tokens(x[0])] if y[2] != x[2] and y[0] != x[0]]
        other = ctx.aligned_choice(lambda y: y[0], x, pool)
        if other is not None:
            yield dict(format="cloze", prompt=x[0], answer=x[1], corrupted_prompt=other[0], corrupted_answer=other[1],
                       text=x[3], refusal=W.REFUSAL)


# ----------------------------------------------------------------------------------------------------------
# CounterFact (ROME / MEMIT)


def _rewrite(ctx, r: Row) -> tuple[str, str, str]:
    """(template, subject, true target) of a CounterFact record's ``requested_rewrite``; a malformed one is refused
    naming its field."""
    source = ctx.options.get("path") or ctx.options.get("hub")
    rewrite = r["requested_rewrite"]
    if not isinstance(rewrite, dict):
        raise ClueflowError(f"a record's requested_rewrite is {type(rewrite).__name__}, not a record of prompt, "
                            f"subject and target_true", file=source, field="requested_rewrite")
    target = rewrite.get("target_true")
    values = {"prompt": rewrite.get("prompt"), "subject": rewrite.get("subject"),
              "target_true.str": target.get("str") if isinstance(target, dict) else None}
    for key, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise ClueflowError(f"a record's {key} is {value!r}, not a non-empty string", file=source,
                                field=f"requested_rewrite.{key}")
    if values["prompt"].count("{}") != 1:
        raise ClueflowError(f"the prompt template {values['prompt']!r} must hold the subject's place '{{}}' once",
                            file=source, field="requested_rewrite.prompt")
    return values["prompt"].strip(), values["subject"].strip(), values["target_true.str"].strip()


@LOADERS.register("counterfact", options=_source(""))
def counterfact(ctx) -> Iterator[Row]:
    """CounterFact (ROME's ``counterfact.json``, MEMIT's evaluation data). Column ``requested_rewrite``: ``prompt``
    (a template with ``{}`` for the subject), ``subject``, ``target_true.str``; every other field is unused.

    ``cloze`` rows: prompt = the template filled with the subject, answer = the true target (leading space),
    ``subject`` = the subject (MEMIT's KL prompts), ``text`` = the fact as a sentence, ``refusal`` = the standard
    refusal. The counterfactual is another case of the same template whose prompt has the same token count and
    whose answer starts with a different token (the subject swapped, as capitals swaps the country); its answer is
    that case's true target. ``target_new`` is not used: it is a rewrite target, not the answer of any prompt.
    """
    rows = _read(ctx, ["requested_rewrite"])
    items = []  # (template, prompt, answer, answer's first token, subject)
    for r in rows:
        template, subject, target = _rewrite(ctx, r)
        answer = f" {target}"
        items.append((template, template.replace("{}", subject), answer,
                      encode_continuation(ctx.tokenizer, answer)[:1], subject))
    groups = _by_length(ctx, items, lambda x: x[1], key=lambda x: x[0])
    for x in items:
        pool = [y for y in groups[x[0], ctx.n_tokens(x[1])] if y[3] != x[3] and y[1] != x[1]]
        other = ctx.aligned_choice(lambda y: y[1], x, pool)
        if other is not None:
            yield dict(format="cloze", prompt=x[1], answer=x[2], corrupted_prompt=other[1], corrupted_answer=other[2],
                       text=f"{x[1]}{x[2]}.", refusal=W.REFUSAL, subject=x[4])
