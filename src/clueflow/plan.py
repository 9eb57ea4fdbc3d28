"""The experiment plan: a validated config and everything the workflow derives from it.

:meth:`Plan.from_config` runs every check — the schema (unknown keys, types, ranges; defaults filled in), the data
set specs, the unlearning runs' methods and options, and the cross-field rules below — and raises one
:class:`ClueflowError` (``<file>: <field>: <message>``) on the first defect. ``rules/common.smk`` and
``clueflow config validate`` both build a plan, so they accept and reject exactly the same configs with the same
line.

Derived: the pairs (each retain set, and all of them combined), the runs and the registered method of each, the
pairs and seeds each run is trained on, the checkpoints (run, pair, seed), fig3's pairs (prefixes of its tasks or
seeded random draws, and its general-corpus reference), table2's reference run, fig7's runs, the shared pair of each
sweep figure, each report's caption facts, the general-utility sets and lm-eval tasks, which runs read CLUE masks
and from which circuit family, each step's parameters, and the workflow's targets.

Architecture check: the model's ``model_type`` is read from its config (:func:`clueflow.sources.source_model_type`,
no weights). A config that needs the circuit graph (a run of a method other than full-parameter GA/NPO/PO, or
table3) on an architecture :data:`clueflow.anatomy.ARCHITECTURES` does not describe is refused at start. Without
the graph the plan leaves out the circuit, localization and fig7 reports. A hub model not cached yet, or a source
that is missing or unreadable, cannot be checked and is planned as before (its model or circuit job says why).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .anatomy import ARCHITECTURES
from .circuits.attribution import METHODS as CIRCUIT_METHODS, method_options
from .config import merge, read_config, validate_config
from .data.build import check_spec, split_fractions
from .evaluate.lmeval import check_general
from .errors import ClueflowError
from .fetch import fetch_spec
from .layout import BASE, RESIZED, Family, Layout, Pair
from .sources import source_model_type
from .tables import RESULT_TABLES
from .unlearn.methods import (DENSE_MLP, FULL_PARAMETER, METHODS, check_runs, method_label, needs_clue_masks,
                              needs_graph, run_spec)
from .unlearn.methods.clue import STAGE_DEFAULTS as CLUE_STAGES

ORIGIN = "origin"  # the base model, evaluated on every pair a table shows
# evaluate keys that are not evaluate_model's arguments: which rows (filtered), which tasks (general), and the
# tradeoff report's curves and reading of them
CURVE_KEYS = ("general", "filtered", "matched_fe", "curve_seeds", "curve_general", "bootstrap")
RUN_TABLES = ("table1", "table2", "table3", "table6", "fig4", "fig6", "forget_count", "fig7",
              "sensitivity", "tradeoff")  # reports that list runs
FIG3_RUN = "clue"  # fig3 shows this run trained against 1..k retain sets
SWEEPS = ("fig4", "fig6", "forget_count")  # reports of their runs on one shared pair
WITHOUT_ORIGIN = ("fig3", "fig6", "forget_count", "table3")  # reports that read no base-model evaluation
# the tradeoff report's files (clueflow.tradeoff), by the role write_tradeoff gives each: name and extension
TRADEOFF_FILES = {"parquet": ("tradeoff", "parquet"), "markdown": ("tradeoff", "md"), "csv": ("tradeoff", "csv"),
                  "points": ("tradeoff_points", "parquet"), "areas": ("tradeoff_auc", "parquet")}


@dataclass
class Plan:
    config: dict[str, Any]
    file: str

    @classmethod
    def from_config(cls, config: dict[str, Any], file: str = "config") -> "Plan":
        """Check ``config`` (filling defaults in place) and derive the plan."""
        _check_finite(config, file)
        # a forget_ratio the user wrote must fit the forget set; the default adapts to a small set
        ratio_given = isinstance(config.get("unlearn"), dict) and "forget_ratio" in config["unlearn"]
        validate_config(config, file=file)
        for name, spec in config["datasets"].items():
            check_spec(name, spec, file=file)
        CIRCUIT_METHODS.get(config["circuits"]["method"], file=file, field="circuits.method")
        check_runs(config["unlearn"], file=file)
        plan = cls(config, str(file))
        plan._check(ratio_given)
        return plan

    def error(self, field: str, message: str) -> ClueflowError:
        return ClueflowError(message, file=self.file, field=field)

    # ---- the model ------------------------------------------------------------------------------------------
    @cached_property
    def model_type(self) -> str | None:
        """The model's transformers ``model_type``; None when it cannot be read yet: a hub model that ``clueflow
        fetch`` has not cached, or a missing or unreadable source (the model job's error, as in ``fetch_spec``)."""
        m = self.config["model"]
        try:
            return source_model_type(m["source"], revision=m["revision"], cache_dir=self.config["hub"]["cache_dir"])
        except ClueflowError:
            return None

    @property
    def has_graph(self) -> bool:
        """Whether the circuit graph describes the model (assumed while its type is unknown)."""
        return self.model_type is None or self.model_type in ARCHITECTURES.names()

    def graph_needed_by(self) -> str | None:
        """The first config field that needs the circuit graph: a run of a graph method, or table3."""
        for run in self.runs:
            if needs_graph(self.run_spec(run)[0]):
                return f"unlearn.methods.{run}"
        return "tables.table3" if self.config["tables"]["table3"] else None

    # ---- sets and pairs ----------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self.config["model"]["name"]

    @property
    def datasets(self) -> list[str]:
        return sorted(self.config["datasets"])

    @property
    def forget(self) -> str:
        return self.config["forget"]

    @property
    def sets_in_use(self) -> list[str]:
        """The forget set, then the retain sets: every set that gets a circuit."""
        return [self.forget, *self.config["retain"]]

    @property
    def pairs(self) -> list[Pair]:
        """The forget set against each retain set, then against all of them (``logic.combined``)."""
        retain = self.config["retain"]
        pairs = [Pair(self.forget, (r,)) for r in retain]
        if self.config["logic"]["combined"] and len(retain) > 1:
            pairs.append(Pair(self.forget, tuple(retain)))
        return pairs

    @property
    def general_sets(self) -> list[str]:
        """General-utility sets that are data sets of the config (run as local lm-eval tasks)."""
        return [s for s in self._general() if s in self.config["datasets"]]

    @property
    def standard_tasks(self) -> list[str]:
        """General-utility names that are not data sets: lm-eval task names."""
        return [s for s in self._general() if s not in self.config["datasets"]]

    def _general(self) -> list[str]:
        general = self.config["evaluate"]["general"]
        return [s for s in self.datasets if s not in self.sets_in_use] if general is None else general

    # ---- runs ----------------------------------------------------------------------------------------------
    @property
    def runs(self) -> list[str]:
        return sorted(self.config["unlearn"]["methods"])

    def run_spec(self, run: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(registered method, options, settings) of ``run``."""
        return run_spec(self.config["unlearn"], run)

    @property
    def run_methods(self) -> dict[str, str]:
        """Run → its method as tables and figures name it: a LoRA run's with its adapter (``ga (LoRA r=8)``), a
        baseline of its own, not full fine-tuning."""
        return {r: method_label(*self.run_spec(r)[::2]) for r in self.runs}

    def run_pairs(self, run: str) -> list[Pair]:
        """The pairs ``run`` is trained on: its own ``pairs``, else the section's, else every pair."""
        own = self.config["unlearn"]["methods"][run].get("pairs", self.config["unlearn"]["pairs"])
        return self.pairs if own is None else [Pair.of(self.forget, p) for p in own]

    def run_seeds(self, run: str) -> list[int]:
        """The seeds ``run`` is trained and evaluated with: its own ``seeds``, else the section's, else the global
        seed. The first is the run's seed where one checkpoint stands for the run (table3)."""
        own = self.config["unlearn"]["methods"][run].get("seeds", self.config["unlearn"]["seeds"])
        return [self.config["seed"]] if own is None else list(own)

    @property
    def checkpoints(self) -> list[tuple[str, Pair, int]]:
        """(run, pair, seed) of every unlearning job."""
        return [(run, pair, seed) for run in self.runs for pair in self.run_pairs(run) for seed in self.run_seeds(run)]

    def searches_lr(self, run: str) -> bool:
        """Whether ``run`` picks its lr from ``lr_grid`` on the validation split (one lr search per pair)."""
        return self.run_spec(run)[2]["lr_grid"] is not None

    def lr_source(self, run: str) -> str | None:
        """The run whose lr search on the pair sets ``run``'s lr: itself with an ``lr_grid``, the run named by its
        ``lr_from``, else None (``lr`` as given)."""
        if self.searches_lr(run):
            return run
        return self.config["unlearn"]["methods"][run].get("lr_from")

    @property
    def curve_seeds(self) -> list[int]:
        """The seeds at which every tradeoff run's whole curve is scored (``evaluate.curve_seeds``; default the
        global seed, whose sweep is also the lr search)."""
        own = self.config["evaluate"]["curve_seeds"]
        return [self.config["seed"]] if own is None else list(own)

    def curves(self) -> list[tuple[str, Pair, int]]:
        """(run, pair, seed) of every lr sweep scored on its test rows: the tradeoff report's curves."""
        return [(r, p, s) for r, p in self.shown("tradeoff") for s in self.curve_seeds]

    def scores_curve(self, run: str, seed: int) -> bool:
        """Whether the lr sweep of ``run`` at ``seed`` is scored on the test rows (a curve of the tradeoff report)."""
        return run in self.table_runs("tradeoff") and seed in self.curve_seeds

    def lr_search_params(self, run: str) -> dict[str, Any]:
        """The sweep's parameters: the run's spec and the pick rule (``unlearn.lr_pick``, ``unlearn.pick_fe``)."""
        u = self.config["unlearn"]
        return dict(self.unlearn_params(run), rule=u["lr_pick"], level=u["pick_fe"])

    def reads_clue_masks(self, run: str) -> bool:
        method, options, _ = self.run_spec(run)
        return needs_clue_masks(method, options)

    def mask_source(self, run: str) -> tuple[Family, dict[str, Any]]:
        """The circuit family a run's CLUE masks come from, with its path fields: the configured circuits, or
        circuits re-selected at the run's own ``edge_fraction`` (fig4's sweep)."""
        fraction = self.config["unlearn"]["methods"][run].get("edge_fraction")
        if fraction is None or fraction == self.config["circuits"]["edge_fraction"]:
            return BASE, {}
        return RESIZED, {"fraction": float(fraction)}

    # ---- tables and figures ------------------------------------------------------------------------------
    def table_runs(self, name: str) -> list[str]:
        return list(self.config["tables"][name])

    def sensitivity_masks(self) -> list[str]:
        """Runs of the sensitivity check whose trained entries are compared with CLUE's masks: those that localize at
        CLUE's budget, CLUE itself aside."""
        return [r for r in self.table_runs("sensitivity") if self.reads_clue_masks(r) and self.run_spec(r)[0] != "clue"]

    def shown(self, name: str) -> list[tuple[str | None, Pair]]:
        """(run, pair) of each run report ``name`` shows on each pair it shows it on; run None where it shows the
        pair's CLUE masks (fig7). The one place its rule's inputs and its caption read."""
        if name == "fig3":
            return [(FIG3_RUN, p) for p in self.fig3_pairs] + self.fig3_reference()
        if name in SWEEPS:
            pair = self.sweep_pair(name)
            return [(r, pair) for r in self.table_runs(name)] if pair else []
        if name == "fig7":
            return [(None, p) for p in self.pairs] + self.fig7_entries()
        return [(r, p) for r in self.table_runs(name) for p in self.run_pairs(r)] if name in RUN_TABLES else []

    def report_evaluations(self, name: str) -> list[tuple[str, Pair, int]]:
        """(run, pair, seed) of the evaluations (table3: the checkpoints) report ``name`` reads (:meth:`evaluations`)."""
        return self.evaluations(self.shown(name), origin=name not in WITHOUT_ORIGIN)

    def provenance(self, name: str) -> str:
        """One paragraph (reStructuredText) for report ``name``'s caption: the model, the pairs, and each run shown
        with its method, seeds, forget examples and optimizer steps; the reader sees what each point averages."""
        parts = [f"Model ``{self.model}``; forget set ``{self.forget}`` (n = {self.config['datasets'][self.forget]['n']})."]
        shown = self.shown(name)
        spec = self.fig3_spec if name == "fig3" else None
        drawn = self.fig3_pairs if spec and not spec["ordered"] else []  # shown first; counted below, not listed
        pairs = [p for _, p in shown[len(drawn):]]
        if pairs:
            parts.append("Pairs: " + ", ".join(f"``{p.name}``" for p in dict.fromkeys(pairs)) + ".")
        if drawn:
            parts.append(f"CLUE's retain tasks drawn at random (seed {spec['seed']}): {len(self.fig3_pairs)} sets, up "
                         f"to {spec['draws']} per size k = {', '.join(map(str, spec['sizes']))}, from the "
                         f"{len(spec['tasks'])} tasks {', '.join(f'``{t}``' for t in spec['tasks'])}.")
        for run in dict.fromkeys(r for r, _ in shown if r is not None):
            method, options, settings = self.run_spec(run)
            seeds = ", ".join(map(str, self.curve_seeds if name == "tradeoff" else self.run_seeds(run)))
            steps = "all epochs" if settings["steps"] is None else f"{settings['steps']} steps"
            if name == "tradeoff":
                steps += f"; lrs {', '.join(f'{g:g}' for g in settings['lr_grid'])}"
            given = ", ".join(f"{k} {_text(v)}" for k, v in options.items())
            parts.append(f"``{run}``: {method_label(method, settings)}{f' ({given})' if given else ''}; seeds {seeds}; "
                         f"{settings['forget_ratio']:g} forget examples; {steps}.")
        return " ".join(parts)

    def table2_reference(self) -> str | None:
        """The run table2's rows are compared with: its first run of method clue."""
        return next((r for r in self.table_runs("table2") if self.run_spec(r)[0] == "clue"), None)

    def fig7_entries(self) -> list[tuple[str, Pair]]:
        """(run, pair) of each fig7 run on each pair that has CLUE masks (its first seed's trained entries)."""
        return [(r, p) for r in self.table_runs("fig7") for p in self.run_pairs(r) if p in self.pairs]

    @cached_property
    def fig3_spec(self) -> dict[str, Any] | None:
        """``tables.fig3`` with its defaults: tasks, sizes, draws, seed, general, reference and ``ordered`` (the list
        form: the tasks' prefixes, in the order given); None for no figure."""
        spec = self.config["tables"]["fig3"]
        if not spec:
            return None
        if isinstance(spec, list):
            spec = dict(tasks=spec, ordered=True)
        tasks = list(spec["tasks"])
        return dict(tasks=tasks, sizes=list(spec.get("sizes", range(1, len(tasks) + 1))),
                    draws=spec.get("draws", 1), seed=spec.get("seed", self.config["seed"]),
                    general=spec.get("general"), reference=list(spec.get("reference", [])),
                    ordered=spec.get("ordered", False))

    @cached_property
    def fig3_pairs(self) -> list[Pair]:
        """CLUE's pairs of fig3: per size k, the first k tasks (list form), else ``draws`` distinct random k-subsets
        of the tasks (all of them where there are no more), seeded; each subset in the tasks' order."""
        spec = self.fig3_spec
        if spec is None:
            return []
        tasks = spec["tasks"]
        if spec["ordered"]:
            return [Pair(self.forget, tuple(tasks[:k])) for k in spec["sizes"]]
        rng, pairs = random.Random(spec["seed"]), []
        for k in spec["sizes"]:
            if math.comb(len(tasks), k) <= spec["draws"]:
                drawn = list(itertools.combinations(tasks, k))
            else:
                chosen: dict[tuple[str, ...], None] = {}
                while len(chosen) < spec["draws"]:
                    chosen[tuple(sorted(rng.sample(tasks, k), key=tasks.index))] = None
                drawn = list(chosen)
            pairs += [Pair(self.forget, d) for d in drawn]
        return pairs

    def fig3_reference(self) -> list[tuple[str, Pair]]:
        """(run, pair) of fig3's dotted lines: CLUE and the reference runs against the general corpus alone."""
        spec = self.fig3_spec
        if spec is None or spec["general"] is None:
            return []
        return [(run, Pair(self.forget, (spec["general"],))) for run in dict.fromkeys([FIG3_RUN, *spec["reference"]])]

    def sweep_pair(self, name: str) -> Pair | None:
        """The first pair every run of sweep figure ``name`` is trained on (None for an empty sweep)."""
        runs = self.table_runs(name)
        if not runs:
            return None
        shared = [p for p in self.run_pairs(runs[0]) if all(p in self.run_pairs(r) for r in runs)]
        if not shared:
            raise self.error(f"tables.{name}", "the runs share no pair")
        return shared[0]

    def evaluations(self, shown: list[tuple[str | None, Pair]], origin: bool = True) -> list[tuple[str, Pair, int]]:
        """(run, pair, seed) of the evaluations a report of ``shown`` (run, pair) reads, each run at each of its
        seeds; first the base model's on each pair, at every seed a run shown on that pair uses (the seed draws the
        forget rows scored, so origin is scored on the same rows as the runs it is compared with)."""
        entries = [(r, p, s) for r, p in shown if r is not None for s in self.run_seeds(r)]
        if origin:
            seeds: dict[Pair, dict[int, None]] = {}
            for _, p, s in entries:
                seeds.setdefault(p, {})[s] = None
            entries = [(ORIGIN, p, s) for p, ss in seeds.items() for s in ss] + entries
        return entries

    # ---- step parameters (what each rule passes to its library function) -------------------------------
    def model_params(self) -> dict[str, Any]:
        m = self.config["model"]
        # the seed only matters for random tiny models; keep it out of the params otherwise
        seed = self.config["seed"] if m["source"].startswith("tiny:") else None
        return dict(source=m["source"], dtype=m["dtype"], trust_remote_code=m["trust_remote_code"],
                    revision=m["revision"], seed=seed)

    def fetch_spec(self) -> dict[str, Any]:
        """What ``clueflow fetch`` caches for this config (:mod:`clueflow.fetch`)."""
        return fetch_spec(self.config, self.standard_tasks)

    def dataset_seed(self, name: str) -> int:
        return self.config["datasets"][name].get("seed", self.config["seed"])

    def circuit_params(self) -> dict[str, Any]:
        """Only what the configured method uses, so that editing another method's options reruns nothing."""
        c = self.config["circuits"]
        keys = ("method", "edge_fraction", "n_examples", "batch_size", "max_length", "batch_tokens", "mlp_blocks",
                "node_fraction", "selection")
        return {**{k: c[k] for k in keys}, "options": method_options(c)}

    def unlearn_params(self, run: str) -> dict[str, Any]:
        method, options, settings = self.run_spec(run)
        return dict(run=run, method=method, options=options, settings=settings)

    def evaluate_params(self, run: str) -> dict[str, Any]:
        u = self.config["unlearn"]
        ratio = u["forget_ratio"] if run == ORIGIN else self.run_spec(run)[2]["forget_ratio"]
        return dict(forget_ratio=ratio, standard_tasks=self.standard_tasks,
                    **{k: v for k, v in self.config["evaluate"].items() if k not in CURVE_KEYS})

    def test_set(self, layout: Layout, **v) -> str:
        """The set whose test rows are evaluated (``v``: its wildcards): filtered (``evaluate.filtered``) or as
        built."""
        return (layout.filtered if self.config["evaluate"]["filtered"] else layout.data)(**v)

    # ---- targets -------------------------------------------------------------------------------------------
    def tables(self) -> list[str]:
        return [n for n in (*RESULT_TABLES, "table3", "sensitivity") if self.config["tables"][n]]

    def figures(self) -> list[str]:
        named = ("fig3", "fig4", "fig6", "forget_count", "sensitivity", "tradeoff")
        return [n for n in named if self.config["tables"][n]] + (["fig7"] if self.has_graph else [])

    def targets(self, layout: Layout) -> list[str]:
        model = self.model
        reports = ("base_accuracy", "circuits", "localization") if self.has_graph else ("base_accuracy",)
        out = [layout.table(model=model, name=n, ext=e) for n in reports for e in ("parquet", "md")]
        out += [layout.filtered(model=model, set=s) for s in self.sets_in_use]
        out += [layout.table(model=model, name="unlearn_runs", ext=e) for e in ("parquet", "md")]
        out += [layout.table(model=model, name=n, ext=e) for n in self.tables() for e in ("parquet", "md", "csv")]
        if self.config["tables"]["tradeoff"]:
            out += [layout.table(model=model, name=n, ext=e) for n, e in TRADEOFF_FILES.values()]
        return out + [layout.figure(model=model, name=n) for n in self.figures()]

    # ---- cross-field checks --------------------------------------------------------------------------------
    def _check(self, ratio_given: bool) -> None:
        cfg, runs = self.config, self.runs
        if ORIGIN in cfg["unlearn"]["methods"]:
            raise self.error(f"unlearn.methods.{ORIGIN}", "the name is reserved for the base model")
        for run in runs:
            for pair in self.run_pairs(run):
                self._check_pair(pair, f"unlearn.methods.{run}.pairs")
        for name in RUN_TABLES:
            for run in cfg["tables"][name]:
                if run not in cfg["unlearn"]["methods"]:
                    raise self.error(f"tables.{name}", f"{run!r} is not a run (keys of unlearn.methods: "
                                                       f"{', '.join(runs)})")
        self._check_fig3()
        self._check_tradeoff()
        for name in ("fig4", "fig6", "forget_count"):
            self.sweep_pair(name)
        if cfg["tables"]["table2"] and self.table2_reference() is None:
            raise self.error("tables.table2", "lists no run of method clue to compare the ablations with")
        for run in cfg["tables"]["fig7"]:
            if self.run_spec(run)[0] in FULL_PARAMETER:
                raise self.error("tables.fig7", f"{run!r} trains every parameter: fig7 draws localized entries")
        for run in cfg["tables"]["fig4"]:
            if not self.reads_clue_masks(run):
                raise self.error("tables.fig4", f"{run!r} does not train on CLUE masks")
        self._check_values(ratio_given)
        self._check_architecture()

    def _check_fig3(self) -> None:
        spec = self.fig3_spec
        if spec is None:
            return
        if max(spec["sizes"]) > len(spec["tasks"]):
            raise self.error("tables.fig3.sizes", f"a size of {max(spec['sizes'])} retain tasks, but "
                                                  f"{len(spec['tasks'])} tasks are given")
        for pair in self.fig3_pairs:
            self._check_pair(pair, "tables.fig3")
        for _, pair in self.fig3_reference():
            self._check_pair(pair, "tables.fig3.general")
        for run in spec["reference"]:
            if run not in self.config["unlearn"]["methods"]:
                raise self.error("tables.fig3.reference", f"{run!r} is not a run (keys of unlearn.methods: "
                                                          f"{', '.join(self.runs)})")
        if FIG3_RUN not in self.runs or self.run_spec(FIG3_RUN)[0] != "clue":
            raise self.error("tables.fig3", f"needs a run {FIG3_RUN!r} of method clue in unlearn.methods")

    def _check_tradeoff(self) -> None:
        cfg = self.config
        u, levels = cfg["unlearn"], cfg["evaluate"]["matched_fe"]
        if u["lr_pick"] == "reach" and not any(abs(u["pick_fe"] - f) < 1e-12 for f in levels):
            raise self.error("unlearn.pick_fe", f"{u['pick_fe']:g} is not one of evaluate.matched_fe "
                                                f"({', '.join(f'{f:g}' for f in levels)})")
        for run in self.table_runs("tradeoff"):
            field = f"unlearn.methods.{run}"
            if "lr_from" in cfg["unlearn"]["methods"][run]:
                raise self.error(f"{field}.lr_from", f"run {run!r} is in tables.tradeoff: it needs its own curve "
                                                     f"(an lr_grid), not another run's lr")
            grid = self.run_spec(run)[2]["lr_grid"] or []
            if len(set(grid)) < 2 or len(set(grid)) != len(grid):
                where = f"{field}.lr_grid" if "lr_grid" in cfg["unlearn"]["methods"][run] else "unlearn.lr_grid"
                raise self.error(where, f"run {run!r} is in tables.tradeoff: its curve needs an lr grid of 2 or more "
                                        f"distinct lrs (given: {grid or 'none'})")
            for seed in self.curve_seeds:
                if seed not in self.run_seeds(run):
                    raise self.error("evaluate.curve_seeds", f"seed {seed} is not a seed of run {run!r} "
                                                             f"({', '.join(map(str, self.run_seeds(run)))})")

    def _check_architecture(self) -> None:
        if self.model_type is not None and ARCHITECTURES.has_experts(self.model_type):
            for run in self.runs:
                method = self.run_spec(run)[0]
                if DENSE_MLP in METHODS.requires(method):
                    raise self.error(f"unlearn.methods.{run}", f"{method} works on the neurons of dense MLPs, and "
                                                               f"{self.config['model']['source']!r} is a mixture-of-"
                                                               f"experts model ({self.model_type})")
        if self.has_graph or (needed := self.graph_needed_by()) is None:
            return
        raise self.error("model.source", f"{self.config['model']['source']!r} is a model of type "
                                         f"{self.model_type!r}, which the circuit graph does not support (supported: "
                                         f"{', '.join(ARCHITECTURES.names())}); {needed} needs the graph (only "
                                         f"{', '.join(sorted(FULL_PARAMETER))} run without it)")

    def _check_values(self, ratio_given: bool) -> None:
        """Values the schema cannot relate to each other."""
        cfg = self.config
        spec = cfg["datasets"][self.forget]
        # the most train rows the set can hold: exact for rows split one by one; a fact split moves whole facts
        # across a boundary, so there only n bounds it
        by_row = spec.get("split_by", "row") == "row"
        pool = round(spec["n"] * split_fractions(spec)["train"]) if by_row else spec["n"]
        for run in self.runs:
            method, options, settings = self.run_spec(run)
            own = "forget_ratio" in cfg["unlearn"]["methods"][run]
            where = f"unlearn.methods.{run}" if own else "unlearn"
            if (own or ratio_given) and settings["forget_ratio"] > 1 and settings["forget_ratio"] > pool:
                raise self.error(f"{where}.forget_ratio", f"{settings['forget_ratio']:g} forget examples, but the "
                                                          f"{'train split of the ' if by_row else ''}forget set "
                                                          f"{self.forget!r} holds at most {pool} rows "
                                                          f"(n = {spec['n']})")
            if method == "clue":  # CLUE's schedule is its stage options
                stages = {s: {**d, **options.get(s, {})} for s, d in CLUE_STAGES.items()}
                if all(st["epochs"] == 0 for st in stages.values()):
                    raise self.error(f"unlearn.methods.{run}.options", f"run {run!r} would train for 0 epochs in "
                                                                       f"both stages")
            elif settings["epochs"] == 0:
                field = f"unlearn.methods.{run}" if "epochs" in cfg["unlearn"]["methods"][run] else "unlearn"
                raise self.error(f"{field}.epochs", f"run {run!r} would train for 0 epochs (its checkpoint would "
                                                    f"be the base model)")
            source = cfg["unlearn"]["methods"][run].get("lr_from")
            if source is not None:
                field = f"unlearn.methods.{run}.lr_from"
                if source not in cfg["unlearn"]["methods"] or not self.searches_lr(source):
                    raise self.error(field, f"run {run!r} takes its lr from {source!r}, which is not a run with an "
                                            f"lr_grid")
                if settings["lr_grid"] is not None:
                    raise self.error(field, f"run {run!r} has an lr_grid of its own: give lr_grid or lr_from")
                missing = [p for p in self.run_pairs(run) if p not in self.run_pairs(source)]
                if missing:
                    raise self.error(field, f"run {source!r} searches no lr on pair {missing[0].name} of run {run!r}")
        # every pair a run trains on, fig3's drawn sets included, gets its lr search on that pair's validation rows
        trained = dict.fromkeys([(r, p) for r, p, _ in self.checkpoints] + self.shown("fig3"))
        for run, pair in trained:
            source = self.lr_source(run)
            for name in (pair.forget, *pair.retains) if source else ():
                if not cfg["datasets"][name].get("validation"):
                    raise self.error(f"datasets.{name}.validation", f"run {run!r} takes its lr from the search of "
                                                                    f"{source!r} on the validation split of pair "
                                                                    f"{pair.name}, and {name!r} has none (give a "
                                                                    f"fraction > 0)")
        for name in cfg["evaluate"]["general"] or []:
            if name in self.sets_in_use:
                raise self.error("evaluate.general", f"{name!r} is the forget or a retain set, not a general-"
                                                     f"utility task")
        check_general(self.standard_tasks, cfg["evaluate"]["metrics"], file=self.file)

    def _check_pair(self, pair: Pair, field: str) -> None:
        for r in pair.retains:
            if r not in self.config["datasets"] or r == self.forget:
                raise self.error(field, f"{r!r} is not a retain candidate (a key of datasets other than the "
                                        f"forget set)")


def _text(value: Any) -> str:
    """An option's value as a caption shows it (a mapping as ``{key: value, …}``)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def load_plan(*paths) -> Plan:
    """The plan of config files ``paths``, later ones merged over earlier ones (as Snakemake's ``configfile:``
    and ``--configfile``)."""
    config: dict[str, Any] = {}
    for path in paths:
        config = merge(config, read_config(path))
    return Plan.from_config(config, file=", ".join(map(str, paths)))


def _check_finite(node: Any, file: str, path: tuple = ()) -> None:
    """No NaN or infinity anywhere (YAML reads ``.inf`` and ``.nan`` as numbers; JSON schema lets them pass)."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ClueflowError(f"{node} is not a finite number", file=file, field=".".join(map(str, path)))
    if isinstance(node, dict):
        for key, value in node.items():
            _check_finite(value, file, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _check_finite(value, file, (*path, i))
