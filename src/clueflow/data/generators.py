"""Built-in offline generators: the paper's circuit tasks (Table 4), a templated SST-2-style sentiment set and
a forget set of factual knowledge (country → capital) in cloze and 4-option multiple-choice form.

A generator is a function ``(ctx) -> Iterator[row dict]`` registered by name. It proposes counterfactual pairs;
:func:`clueflow.data.build.build_set` keeps the first ``n`` that are token-aligned under the model's tokenizer and
whose answers differ in their first token. Everything random comes from ``ctx.rng`` (seeded), so a set is a
pure function of (generator, options, seed, tokenizer).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from ..registry import Registry
from ..scoring import encode_prompt
from . import wordlists as W

Row = dict[str, Any]
GENERATORS: Registry[Callable[["GenContext"], Iterator[Row]]] = Registry("generator")
LETTERS = "ABCDEFGHIJ"


@dataclass
class GenContext:
    tokenizer: Any
    rng: random.Random
    options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None  # the set being built, for error messages (datasets.<name>.options.<key>)

    def n_tokens(self, text: str) -> int:
        return len(encode_prompt(self.tokenizer, text))

    def aligned_choice(self, template: Callable[[Any], str], clean: Any, pool) -> Any | None:
        """A random ``x`` from ``pool`` (≠ ``clean``) with ``template(x)`` as long in tokens as ``template(clean)``."""
        target = self.n_tokens(template(clean))
        candidates = [x for x in pool if x != clean]
        self.rng.shuffle(candidates)
        for x in candidates:
            if self.n_tokens(template(x)) == target:
                return x
        return None


def mc_prompt(question: str, options: Sequence[str]) -> str:
    """``{question}\nA. ...\nB. ...\nAnswer:`` (lm-eval's lettered multiple-choice layout)."""
    return "\n".join([question] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)] + ["Answer:"])


COUNTRY_HALVES = ("all", "half_a", "half_b")


@GENERATORS.register("capitals", options={"forms": list, "mc_scoring": ("text", "letter"),
                                          "countries": COUNTRY_HALVES})
def capitals(ctx: GenContext) -> Iterator[Row]:
    """Country → capital, the default forget knowledge. Options: ``forms`` (subset of ``[cloze, mc]``),
    ``mc_scoring`` (``text``: score the option texts, for small models; ``letter``: score `` A``..`` D``),
    ``countries`` (``all``; ``half_a`` / ``half_b``: two disjoint halves of the country list, fixed whatever the
    seed, so that a forget set and a retain set of one task share its mechanism and output space but no fact;
    counterfactuals and distractors come from the same half)."""
    forms = ctx.options.get("forms", ["cloze", "mc"])
    letter = ctx.options.get("mc_scoring", "text") == "letter"
    half = COUNTRY_HALVES.index(ctx.options.get("countries", "all"))
    capital = dict(W.COUNTRY_CAPITALS)
    if half:  # every other country in alphabetical order: the halves do not depend on the list's order
        kept = set(sorted(capital)[half - 1::2])
        capital = {c: a for c, a in capital.items() if c in kept}
    countries = list(capital)
    ctx.rng.shuffle(countries)
    cloze = lambda c: f"The capital of {c} is"  # noqa: E731
    for country in countries:
        fact = dict(text=f"The capital of {country} is {capital[country]}.", refusal=W.REFUSAL, subject=country)
        if "cloze" in forms:
            other = ctx.aligned_choice(cloze, country, countries)
            if other is not None:
                yield dict(format="cloze", prompt=cloze(country), answer=f" {capital[country]}",
                           corrupted_prompt=cloze(other), corrupted_answer=f" {capital[other]}", **fact)
        if "mc" in forms:
            # letter scoring: lm-eval's lettered question; text scoring: the options, then the cloze stem
            # (SmolLM2-135M: 96% on the stem form, 36% with "Question: ...\nA. ...\nAnswer:", 97 countries)
            stem = (lambda c: f"Question: What is the capital of {c}?") if letter else cloze  # noqa: E731
            other = ctx.aligned_choice(stem, country, countries)
            if other is None:
                continue
            distractors = ctx.rng.sample([capital[c] for c in countries if c not in (country, other)], 2)
            options = [capital[country], capital[other], *distractors]
            ctx.rng.shuffle(options)
            if letter:
                prompt = lambda c: mc_prompt(stem(c), options)  # noqa: E731
                choices = [f" {LETTERS[i]}" for i in range(len(options))]
            else:
                prompt = lambda c: f"Options: {', '.join(options)}.\n{stem(c)}"  # noqa: E731
                choices = [f" {o}" for o in options]
            label, corrupted_label = options.index(capital[country]), options.index(capital[other])
            yield dict(format="mc", prompt=prompt(country), answer=choices[label], corrupted_prompt=prompt(other),
                       corrupted_answer=choices[corrupted_label], choices=choices, label=label, **fact)


@GENERATORS.register("ioi")
def ioi(ctx: GenContext) -> Iterator[Row]:
    """Indirect object identification; the counterfactual swaps the subject (ABB → ABA), flipping the answer."""
    names = list(W.MALE_NAMES + W.FEMALE_NAMES)
    templates = (
        "When {a} and {b} went to the {p}, {s} gave a {o} to",
        "After {a} and {b} arrived at the {p}, {s} handed a {o} to",
        "Then, {a} and {b} were working at the {p}. {s} decided to give a {o} to",
        "While {a} and {b} were walking to the {p}, {s} offered a {o} to",
    )
    while True:
        a, b = ctx.rng.sample(names, 2)
        t, p, o = ctx.rng.choice(templates), ctx.rng.choice(W.PLACES), ctx.rng.choice(W.OBJECTS)
        choices = [f" {a}", f" {b}"]
        yield dict(format="choice", prompt=t.format(a=a, b=b, p=p, s=b, o=o), answer=f" {a}",
                   corrupted_prompt=t.format(a=a, b=b, p=p, s=a, o=o), corrupted_answer=f" {b}",
                   choices=choices, label=0)


@GENERATORS.register("induction", options={"length": int})
def induction(ctx: GenContext) -> Iterator[Row]:
    """A random word sequence, then its prefix again: the next word is copied from the first occurrence.
    The counterfactual changes that word in the first occurrence. Option ``length`` (default 6)."""
    length = int(ctx.options.get("length", 6))
    while True:
        seq = ctx.rng.sample(W.NOUNS, length)
        k = length - 2
        prompt = lambda w: " ".join(seq[:k] + [w] + seq[k + 1:] + seq[:k])  # noqa: E731
        other = ctx.aligned_choice(prompt, seq[k], [x for x in W.NOUNS if x not in seq])
        if other is not None:
            yield dict(format="cloze", prompt=prompt(seq[k]), answer=f" {seq[k]}", corrupted_prompt=prompt(other),
                       corrupted_answer=f" {other}")


@GENERATORS.register("arithmetic", options={"max_operand": int})
def arithmetic(ctx: GenContext) -> Iterator[Row]:
    """``{a} plus {b} equals`` → `` {a+b}``; the counterfactual changes ``b``. Option ``max_operand`` (20)."""
    hi = int(ctx.options.get("max_operand", 20))
    while True:
        a, b = ctx.rng.randint(1, hi), ctx.rng.randint(1, hi)
        prompt = lambda x: f"{a} plus {x} equals"  # noqa: E731
        other = ctx.aligned_choice(prompt, b, range(1, hi + 1))
        if other is not None:
            yield dict(format="cloze", prompt=prompt(b), answer=f" {a + b}", corrupted_prompt=prompt(other),
                       corrupted_answer=f" {a + other}")


@GENERATORS.register("greater_than")
def greater_than(ctx: GenContext) -> Iterator[Row]:
    """``The war lasted from the year 17YY to the year 17`` with choices (later year, earlier year); the
    counterfactual start year ``01`` makes every year valid (Hanna et al.), so the corrupted answer is the
    earlier one."""
    nouns = ("war", "drought", "expedition", "reign", "famine", "rebellion", "voyage", "siege")
    while True:
        yy = ctx.rng.randint(20, 89)
        hi, lo = ctx.rng.randint(yy + 1, 99), ctx.rng.randint(2, yy - 1)
        noun, century = ctx.rng.choice(nouns), ctx.rng.randint(11, 18)
        prompt = lambda y: f"The {noun} lasted from the year {century}{y:02d} to the year {century}"  # noqa: E731
        choices = [f"{hi:02d}", f"{lo:02d}"]
        yield dict(format="choice", prompt=prompt(yy), answer=choices[0], corrupted_prompt=prompt(1),
                   corrupted_answer=choices[1], choices=choices, label=0)


@GENERATORS.register("bool")
def boolean(ctx: GenContext) -> Iterator[Row]:
    """Boolean expressions such as ``(True and False) or True`` with three or four literals; the
    counterfactual is another assignment of the literals (same operators, same token count) with the opposite
    value."""
    choices = [" True", " False"]
    shapes = ("({0} {o0} {1}) {o1} {2}", "{0} {o0} ({1} {o1} {2})", "({0} {o0} {1}) {o1} ({2} {o2} {3})")
    while True:
        shape = ctx.rng.choice(shapes)
        n_lit = shape.count("{") - shape.count("{o")
        ops = {f"o{i}": ctx.rng.choice(("and", "or")) for i in range(n_lit - 1)}
        assignments = list(itertools.product((True, False), repeat=n_lit))

        def render(v):
            return shape.format(*v, **ops) + " is"

        def value(v):
            return eval(shape.format(*v, **ops), {"__builtins__": {}})  # only True/False/and/or/parentheses

        vals = ctx.rng.choice(assignments)
        flipped = [v for v in assignments if value(v) != value(vals)]
        other = ctx.aligned_choice(render, vals, flipped)
        if other is not None:
            yield dict(format="choice", prompt=render(vals), answer=f" {value(vals)}",
                       corrupted_prompt=render(other), corrupted_answer=f" {value(other)}", choices=choices,
                       label=choices.index(f" {value(vals)}"))


@GENERATORS.register("reverse", options={"length": int, "shots": int})
def reverse(ctx: GenContext) -> Iterator[Row]:
    """Reverse a list of digits after ``shots`` worked examples (default 3); the counterfactual changes the
    list's last digit, which is the answer's first. Option ``length`` (default 3)."""
    length, shots = int(ctx.options.get("length", 3)), int(ctx.options.get("shots", 3))
    fmt = lambda xs: "[" + ", ".join(map(str, xs)) + "]"  # noqa: E731
    while True:
        demo = "".join(f"{fmt(s)} -> {fmt(s[::-1])}\n" for s in (ctx.rng.sample(range(10), length)
                                                                  for _ in range(shots)))
        xs = ctx.rng.sample(range(10), length)
        ys = xs[:-1] + [ctx.rng.choice([d for d in range(10) if d not in xs])]
        prompt = lambda v: f"{demo}{fmt(v)} -> ["  # noqa: E731
        yield dict(format="cloze", prompt=prompt(xs), answer=fmt(xs[::-1])[1:], corrupted_prompt=prompt(ys),
                   corrupted_answer=fmt(ys[::-1])[1:])


@GENERATORS.register("gender")
def gender(ctx: GenContext) -> Iterator[Row]:
    """Pronoun agreement (gender bias task): the counterfactual swaps the name for one of the other gender."""
    templates = ("So {n} is a really great friend, isn't", "Then {n} said the work was done, didn't",
                 "I think {n} is coming to the party, isn't", "Well, {n} was very tired after the trip, wasn't")
    while True:
        male = ctx.rng.random() < 0.5
        name = ctx.rng.choice(W.MALE_NAMES if male else W.FEMALE_NAMES)
        t = ctx.rng.choice(templates)
        other = ctx.aligned_choice(lambda n: t.format(n=n), name, W.FEMALE_NAMES if male else W.MALE_NAMES)
        if other is None:
            continue
        choices = [" he", " she"]
        yield dict(format="choice", prompt=t.format(n=name), answer=choices[0 if male else 1],
                   corrupted_prompt=t.format(n=other), corrupted_answer=choices[1 if male else 0], choices=choices,
                   label=0 if male else 1)


@GENERATORS.register("docstring")
def docstring(ctx: GenContext) -> Iterator[Row]:
    """Predict the next ``:param`` name from the signature (Heimersheim & Janiak); the counterfactual
    renames that argument in the signature."""
    while True:
        args = ctx.rng.sample(W.CODE_WORDS, 6)
        d = [" ".join(ctx.rng.sample(W.DOC_WORDS, 2)) for _ in range(3)]

        def prompt(last: str) -> str:
            sig = ", ".join(args[:5] + [last])
            return (f"def {args[0][:1]}_fn(self, {sig}):\n    \"\"\"{d[0].capitalize()}\n\n"
                    f"    :param {args[3]}: {d[1]}\n    :param {args[4]}: {d[2]}\n    :param")

        other = ctx.aligned_choice(prompt, args[5], [w for w in W.CODE_WORDS if w not in args])
        if other is not None:
            yield dict(format="cloze", prompt=prompt(args[5]), answer=f" {args[5]}", corrupted_prompt=prompt(other),
                       corrupted_answer=f" {other}")


@GENERATORS.register("sentiment")
def sentiment(ctx: GenContext) -> Iterator[Row]:
    """Templated SST-2-style reviews; the counterfactual swaps the adjective for one of opposite polarity."""
    templates = ("Review: The {s} was {a}.\nSentiment:", "Review: I thought the {s} was {a}.\nSentiment:",
                 "Review: This {s} is {a}, in my opinion.\nSentiment:", "Review: Honestly, the {s} is {a}.\nSentiment:")
    choices = [" positive", " negative"]
    while True:
        pos = ctx.rng.random() < 0.5
        adj = ctx.rng.choice(W.POSITIVE_ADJ if pos else W.NEGATIVE_ADJ)
        t, s = ctx.rng.choice(templates), ctx.rng.choice(W.REVIEW_SUBJECTS)
        other = ctx.aligned_choice(lambda a: t.format(s=s, a=a), adj, W.NEGATIVE_ADJ if pos else W.POSITIVE_ADJ)
        if other is not None:
            yield dict(format="choice", prompt=t.format(s=s, a=adj), answer=choices[0 if pos else 1],
                       corrupted_prompt=t.format(s=s, a=other), corrupted_answer=choices[1 if pos else 0],
                       choices=choices, label=0 if pos else 1)
