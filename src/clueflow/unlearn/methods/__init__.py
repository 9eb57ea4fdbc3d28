"""Unlearning methods, registered by name: each turns a :class:`Context` into the trainer's stages.

A method is one small module here: a function decorated with ``@METHODS.register(name, options={...})`` that
returns ``list[Stage]``. Localization baselines compute a mask in the same format as CLUE's mask files (one
bool tensor per maskable parameter, see :mod:`clueflow.masks`) and fine-tune through the same trainer.

Settings every method reads (the config's ``unlearn`` section, overridable per run): ``lr``, ``epochs`` (total
epochs of a single-stage method), ``steps`` (the run's optimizer steps, split over its stages in proportion to
their epochs by the run step; null: the epochs), ``lr_grid`` (the lrs an lr search picks ``lr`` from),
``loss`` (forget loss: ga | npo | po), ``retain_weight`` (λ), ``weight_decay``; ``attribution_batch_size`` (the
examples per forward pass of a localizer's attribution: speed and memory only); the trainer's memory options
``gradient_checkpointing``, ``joint_retain_pass`` and ``lora`` (the latter for the full-parameter methods of :data:`FULL_PARAMETER`
only: a masked method trains exactly its mask's entries). The
section's ``gpus`` (per run too) is not a setting of the run's result: it sizes the job and its process count.
Only the full-parameter methods run without the circuit graph (:func:`needs_graph`), on any causal LM.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ...config import choices
from ...errors import ClueflowError
from ...registry import NUMBER, Registry

if TYPE_CHECKING:  # the plan reads the registry: importing the methods does not import torch
    import pandas as pd
    import torch
    from torch import nn

    from ...circuits.graph import Graph
    from ..batches import Batches
    from ..trainer import Stage, UnlearnData

METHODS: Registry[Callable[["Context"], list[Stage]]] = Registry("unlearning method")
LOSSES = tuple(choices("unlearn.loss"))  # the ``loss`` option of a method (clueflow.unlearn.losses computes each)
RATIO = (NUMBER, "clue")  # the ``ratio`` option of a localizer: a share of the maskable entries, or CLUE's count
AT_CLUE_COUNT = {"ratio": "clue"}  # a localizer's default budget: as many entries as CLUE's forget ∪ conflict masks
SETTINGS = ("forget_ratio", "batch_size", "attribution_batch_size", "max_length", "lr", "lr_grid", "epochs", "steps", "loss", "retain_weight",
            "weight_decay", "npo_beta", "grad_clip", "gradient_checkpointing", "joint_retain_pass", "lora")
FULL_PARAMETER: set[str] = set()  # methods that train every parameter (filled where they register)
# masked methods that only train masks they are given (no localization on the model), so that several processes
# run them on a model loaded sharded (FSDP2): no process ever holds the full weights
GIVEN_MASKS: set[str] = set()
DENSE_MLP = "dense_mlp"  # a method's requirement: it scores or edits the neurons of one MLP output projection a layer


def run_spec(unlearn: dict[str, Any], run: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(method, options, settings) of run ``run`` of the config's ``unlearn`` section: the run's own settings
    over the section's (a LoRA run's lr grid, unless its own: ``lora_lr_grid``)."""
    spec = unlearn["methods"][run]
    settings = {k: spec.get(k, unlearn[k]) for k in SETTINGS}
    if settings["lora"] is not None and "lr_grid" not in spec and settings["lr_grid"] is not None:
        settings["lr_grid"] = unlearn["lora_lr_grid"]  # an adapter's own scale of lr
    return spec.get("method", run), dict(spec.get("options", {})), settings


def method_label(method: str, settings: dict[str, Any]) -> str:
    """``method``, or ``method (LoRA r=N)`` for a run that trains a LoRA adapter."""
    lora = settings.get("lora")
    return method if lora is None else f"{method} (LoRA r={lora['r']})"


def method_impl(method: str, options: dict[str, Any], run: str) -> tuple[Callable[["Context"], list[Stage]], dict]:
    """Run ``run``'s method implementation and its options completed with the method's defaults (those of the
    mode given), as the implementation reads them and the run's summary records them."""
    impl = METHODS.get(method, field=f"unlearn.methods.{run}.method")
    METHODS.check_options(method, options, field=f"unlearn.methods.{run}.options")
    return impl, METHODS.resolve(method, options)


def run_gpus(unlearn: dict[str, Any], run: str) -> int:
    """Processes (one GPU each) of run ``run``'s job: the run's own ``gpus`` over the section's."""
    return unlearn["methods"][run].get("gpus", unlearn["gpus"])


def check_runs(unlearn: dict[str, Any], *, file: str | None = None) -> None:
    """Every run names a registered method and only options that method reads; LoRA only on full-parameter runs;
    several processes only where the method trains every parameter (DDP) or given masks (FSDP2)."""
    for run in unlearn["methods"]:
        method, options, settings = run_spec(unlearn, run)
        METHODS.get(method, file=file, field=f"unlearn.methods.{run}.method")
        METHODS.check_options(method, options, field=f"unlearn.methods.{run}.options", file=file)
        if settings["lora"] is not None and method not in FULL_PARAMETER:
            where = f"unlearn.methods.{run}.lora" if "lora" in unlearn["methods"][run] else "unlearn.lora"
            raise ClueflowError(f"run {run!r} (method {method}) trains a mask: LoRA is for the full-parameter "
                                f"methods ({', '.join(sorted(FULL_PARAMETER))}); set lora on those runs only",
                                file=file, field=where)
        if run_gpus(unlearn, run) > 1 and method not in FULL_PARAMETER | GIVEN_MASKS:
            where = f"unlearn.methods.{run}.gpus" if "gpus" in unlearn["methods"][run] else "unlearn.gpus"
            raise ClueflowError(f"run {run!r} (method {method}) localizes on the model in one process: gpus > 1 is "
                                f"for {', '.join(sorted(FULL_PARAMETER | GIVEN_MASKS))}", file=file, field=where)


@dataclass
class Context:
    model: nn.Module
    tok: Any
    graph: Graph | None  # None for a method that does not need it (:func:`needs_graph`)
    data: UnlearnData
    forget_qa: Batches  # forget rows as prompt + answer (answer labelled): attribution targets
    forget_df: pd.DataFrame
    settings: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    clue_masks: dict[str, dict[str, torch.Tensor]] | None = None  # forget / conflict masks of the pair
    seed: int = 0
    # the forget rows as batches of another example kind, built on request: only PCGU reads a kind (its rows'
    # counterfactual pairs) that the shared fields above do not hold
    forget_batches: Callable[[str], Batches] | None = None

    @property
    def attribution_batch_size(self) -> int:
        return self.settings["attribution_batch_size"]

    def maskable(self) -> dict[str, nn.Parameter]:
        from ...masks import maskable

        return maskable(self.model, self.graph)

    def stage(self, name: str, mask: dict[str, torch.Tensor] | None, *, epochs: int | None = None,
              loss: str | None = None, retain_weight: float | None = None, **kw) -> Stage:
        from ..trainer import Stage

        s = self.settings
        return Stage(name, mask, loss=loss or self.options.get("loss", s["loss"]),
                     epochs=s["epochs"] if epochs is None else epochs, lr=s["lr"],
                     retain_weight=s["retain_weight"] if retain_weight is None else retain_weight,
                     weight_decay=s["weight_decay"], **kw)

    def edit(self, name: str, mask: dict[str, torch.Tensor], step: str, **record) -> Stage:
        """The stage of an edit the method made itself (no trainer step): its mask (the entries it changed) and
        what it did, which the run's summary records instead of the trainer's settings."""
        from ..trainer import Stage

        return Stage(name, mask, epochs=0, edit=dict(step=step, **record))

    def clue_union(self) -> dict[str, torch.Tensor]:
        if self.clue_masks is None:
            raise ValueError("this method needs the pair's CLUE masks (ratio: clue) but none were given")
        f, c = self.clue_masks["forget"], self.clue_masks["conflict"]
        return {k: f[k] | c[k] for k in f}

    def budget(self) -> int:
        """Entries a ratio-based localizer selects: ``ratio`` × maskable entries, or CLUE's count (``clue``)."""
        ratio = self.options["ratio"]
        if ratio == "clue":
            return sum(int(m.sum()) for m in self.clue_union().values())
        return int(round(float(ratio) * sum(p.numel() for p in self.maskable().values())))


def needs_graph(method: str) -> bool:
    """Whether ``method`` needs the circuit graph: every method but the full-parameter ones trains (or localizes)
    entries of the parameters the graph marks maskable; those run on any causal LM transformers loads."""
    return method not in FULL_PARAMETER


def needs_clue_masks(method: str, options: dict) -> bool:
    return method == "clue" or METHODS.resolve(method, options).get("ratio") == "clue"


def top_entries(flat: torch.Tensor, shapes: dict[str, torch.Size], k: int) -> dict[str, torch.Tensor]:
    """Masks of the ``k`` highest scores over all tensors together (ties at the threshold all included). ``flat``
    holds every tensor's scores concatenated in ``shapes``' order: one buffer, ranked where it is (no second copy
    of all scores on a GPU)."""
    import torch

    k = max(0, min(k, flat.numel()))
    if k == 0:
        return {n: torch.zeros(s, dtype=torch.bool, device=flat.device) for n, s in shapes.items()}
    threshold = flat.kthvalue(flat.numel() - k + 1).values
    parts = flat.split([s.numel() for s in shapes.values()])
    return {n: (v >= threshold).view(s) for (n, s), v in zip(shapes.items(), parts)}


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
