"""Every artifact path of the workflow, owned in one place.

Each method of :class:`Layout` is one artifact kind. Fields given as keyword arguments are filled in; the others
stay Snakemake wildcards, so the same method gives a rule its pattern and a script, the CLI or a test a concrete
path::

    Layout().circuit()                          # 'results/circuits/{model}/{set}.parquet'
    Layout().circuit(model="m", set="ioi")      # 'results/circuits/m/ioi.parquet'
    Layout().masks(pair=Pair("capitals", ("sentiment",)), kind="forget")   # {model} left as a wildcard

Circuits and everything localized from them come in three named **families**: ``base`` (the
configured circuits), ``resized`` (the same scores re-selected at another edge fraction: fig4's sweep, wildcard
``{fraction}``) and ``after`` (circuits found again on the unlearned checkpoint of ``{run}`` at ``{seed}`` on a
pair: table3).
Nothing parses a path back into identities: the plan passes set, pair, run and model explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_FIELD = re.compile(r"\{(\w+)\}")
PAIR_SEP, RETAIN_SEP = "__", "+"
# Names that become path components, one pattern each for the config schema and the wildcard constraints: never
# ".", "..", a separator or a space; set and run names never hold the pair separator "__".
NAME = r"[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*"  # data sets and runs
MODEL_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
RETAINS = rf"{NAME}(?:\{RETAIN_SEP}{NAME})*"  # one retain set or several joined by "+"


@dataclass(frozen=True)
class Pair:
    """A forget set against one or more retain sets (trained on, localized against, evaluated on together)."""

    forget: str
    retains: tuple[str, ...]

    @property
    def retain_name(self) -> str:
        return RETAIN_SEP.join(self.retains)

    @property
    def name(self) -> str:
        return f"{self.forget}{PAIR_SEP}{self.retain_name}"

    @property
    def fields(self) -> dict[str, str]:
        """The pair as the ``{forget}`` and ``{retains}`` wildcards of a path."""
        return {"forget": self.forget, "retains": self.retain_name}

    @classmethod
    def of(cls, forget: str, retains) -> "Pair":
        """From a retain list, or from the ``{retains}`` wildcard (``a+b``)."""
        return cls(forget, tuple(retains.split(RETAIN_SEP)) if isinstance(retains, str) else tuple(retains))

    def __str__(self) -> str:
        return self.name


def pair_name(forget: str, retains) -> str:
    return Pair.of(forget, retains).name


@dataclass(frozen=True)
class Family:
    """Where one family's set-level (circuits) and pair-level (cnf, assignments, masks) artifacts live, below
    ``<kind>/{model}/``."""

    name: str
    set_dir: str
    pair_dir: str


BASE = Family("base", "", "")
RESIZED = Family("resized", "edges-{fraction}/", "edges-{fraction}/")
SEED_DIR = "seed{seed}/"  # a run's checkpoints and evaluations, one directory per seed
AFTER = Family("after", f"after/{{run}}/{SEED_DIR}{{forget}}__{{retains}}/", f"after/{{run}}/{SEED_DIR}")
MASK_KINDS = ("forget", "conflict")
# provenance files that make a directory recognisable as an artifact of its kind (only such a directory is replaced)
MODEL_PROVENANCE = "clueflow_model.json"
CHECKPOINT_SUMMARY = "unlearn.json"


def _value(key: str, value: Any) -> str:
    if key == "fraction" and isinstance(value, float):
        return f"{value:g}"  # 0.01, not 0.010000
    return str(value)


class Layout:
    """Artifact paths under ``root`` (results) and rule logs under ``logs``."""

    def __init__(self, root: str = "results", logs: str = "logs"):
        self.root, self.logs = root.rstrip("/"), logs.rstrip("/")

    def fill(self, template: str, values: dict[str, Any]) -> str:
        """``template`` with the fields in ``values`` filled in (``pair=`` gives ``{forget}`` and ``{retains}``);
        fields not given stay wildcards; values for fields the template lacks are ignored, so a rule's whole
        wildcard set can be passed."""
        values = dict(values)
        pair = values.pop("pair", None)
        if pair is not None:
            values.update(pair.fields)
        return _FIELD.sub(lambda m: _value(m[1], values[m[1]]) if m[1] in values else m[0], template)

    def _path(self, template: str, values: dict[str, Any]) -> str:
        return self.fill(f"{self.root}/{template}", values)

    # ---- model and data ------------------------------------------------------------------------------------
    def fetched(self, **v) -> str:
        """The manifest of what ``clueflow fetch`` cached for the config (:mod:`clueflow.fetch`)."""
        return self._path("fetch/{model}.json", v)

    def model(self, **v) -> str:
        """The materialized base model (HF checkpoint directory)."""
        return self._path("models/{model}", v)

    def data(self, **v) -> str:
        return self._path("data/{model}/{set}.parquet", v)

    def filtered(self, **v) -> str:
        return self._path("data/{model}/{set}.filtered.parquet", v)

    def accuracy(self, **v) -> str:
        return self._path("data/{model}/{set}.accuracy.json", v)

    # ---- circuits and localization (per family) --------------------------------------------------------
    def circuit(self, family: Family = BASE, **v) -> str:
        return self._path(f"circuits/{{model}}/{family.set_dir}{{set}}.parquet", v)

    def circuit_summary(self, family: Family = BASE, **v) -> str:
        return self._path(f"circuits/{{model}}/{family.set_dir}{{set}}.json", v)

    def cnf(self, family: Family = BASE, **v) -> str:
        return self._path(f"cnf/{{model}}/{family.pair_dir}{{forget}}__{{retains}}.cnf", v)

    def wcnf(self, family: Family = BASE, **v) -> str:
        return self._path(f"cnf/{{model}}/{family.pair_dir}{{forget}}__{{retains}}.wcnf", v)

    def assignment(self, family: Family = BASE, **v) -> str:
        return self._path(f"assignments/{{model}}/{family.pair_dir}{{forget}}__{{retains}}.parquet", v)

    def assignment_summary(self, family: Family = BASE, **v) -> str:
        return self._path(f"assignments/{{model}}/{family.pair_dir}{{forget}}__{{retains}}.json", v)

    def masks(self, family: Family = BASE, **v) -> str:
        """``kind``: forget | conflict."""
        return self._path(f"masks/{{model}}/{family.pair_dir}{{forget}}__{{retains}}/{{kind}}.safetensors", v)

    def mask_stats(self, family: Family = BASE, **v) -> str:
        return self._path(f"masks/{{model}}/{family.pair_dir}{{forget}}__{{retains}}/stats.json", v)

    # ---- unlearning and evaluation -------------------------------------------------------------------------
    def checkpoint(self, **v) -> str:
        """An unlearned model (HF checkpoint directory with ``unlearn.json`` and ``train_log.parquet``), trained
        with ``seed``."""
        return self._path(f"checkpoints/{{model}}/{{run}}/{SEED_DIR}{{forget}}__{{retains}}", v)

    def lr_search(self, **v) -> str:
        """A run's lr sweep on a pair at ``seed`` (``unlearn.lr_grid``, :mod:`clueflow.curve`): grid, scores per lr,
        the pick (the config seed's is the lr of the run's checkpoints)."""
        return self._path(f"lr/{{model}}/{{run}}/{SEED_DIR}{{forget}}__{{retains}}.json", v)

    def lr_curve(self, **v) -> str:
        """The lr sweep's scored rows: one per lr and row (validation, and a tradeoff run's test rows)."""
        return self._path(f"lr/{{model}}/{{run}}/{SEED_DIR}{{forget}}__{{retains}}.parquet", v)

    def lr_pick(self, **v) -> str:
        """The sweep's picked point as a checkpoint directory (as :meth:`checkpoint`): the run's checkpoint at the
        config seed adopts it (hard links), so the pick is not trained twice."""
        return self._path(f"lr/{{model}}/{{run}}/{SEED_DIR}{{forget}}__{{retains}}.picked", v)

    def evaluation(self, **v) -> str:
        """Per-example evaluation rows of one model (``run``; ``origin`` = the base model) on one pair, its forget
        rows drawn with ``seed`` (the checkpoint's)."""
        return self._path(f"eval/{{model}}/{{run}}/{SEED_DIR}{{forget}}__{{retains}}.parquet", v)

    def evaluation_summary(self, **v) -> str:
        return self._path(f"eval/{{model}}/{{run}}/{SEED_DIR}{{forget}}__{{retains}}.json", v)

    # ---- tables and figures --------------------------------------------------------------------------------
    def table(self, **v) -> str:
        """``name``: base_accuracy, circuits, localization, unlearn_runs, table1, …; ``ext``: parquet | md | csv."""
        return self._path("tables/{model}/{name}.{ext}", v)

    def figure(self, **v) -> str:
        return self._path("figures/{model}/{name}.png", v)

    # ---- logs ------------------------------------------------------------------------------------------------
    def log(self, rule: str, template: str) -> str:
        """A rule's log, one file per job: ``logs/<rule>/<template>.log`` (``template`` names the job's wildcards,
        e.g. ``{model}/{set}``)."""
        return f"{self.logs}/{rule}/{template}.log"
