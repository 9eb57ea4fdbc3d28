"""``clueflow`` command line; subcommands mirror the workflow's rules.

    clueflow config validate CONFIG [CONFIG...]
    clueflow fetch --config CONFIG [CONFIG...] [--manifest PATH]
    clueflow model materialize --source SRC --out DIR [--dtype D] [--trust-remote-code] [--revision R]
    clueflow model generate DIR --prompt TEXT
    clueflow data build --config CONFIG --set NAME --model-dir DIR --out PATH
    clueflow data filter --data PATH --model-dir DIR --out PATH --accuracy PATH [--keep MODE]
    clueflow data accuracy-table ACCURACY.json... --parquet PATH --markdown PATH
    clueflow data show PATH
    clueflow circuits build --data PATH --model-dir DIR --out PATH --summary PATH [--edge-fraction F] ...
    clueflow circuits summary PATH
    clueflow circuits table SUMMARY.json... --parquet PATH --markdown PATH
    clueflow circuits resize --circuit PATH --data PATH --model-dir DIR --edge-fraction F --out PATH --summary PATH
    clueflow cnf build --forget CIRCUIT --retain CIRCUIT... --cnf PATH --wcnf PATH
    clueflow cnf summary PATH
    clueflow solve run --cnf PATH --wcnf PATH --forget CIRCUIT --retain CIRCUIT... --out PATH --summary PATH
    clueflow solve summary ASSIGNMENT
    clueflow solve explain NODE --wcnf PATH --assignment PATH
    clueflow masks build --assignment PATH --model-dir DIR --forget-out PATH --conflict-out PATH --stats PATH
    clueflow masks summary MASK.safetensors
    clueflow unlearn run --config CONFIG --run NAME --model-dir DIR --forget PATH --retain PATH... --out DIR
                         [--forget-mask PATH --conflict-mask PATH] [--lr-search PATH] [--seed N]
    clueflow unlearn lr-search --config CONFIG --run NAME --model-dir DIR --forget PATH --retain PATH... --out PATH
                               [--forget-mask PATH --conflict-mask PATH]
    clueflow unlearn methods
    clueflow unlearn table CHECKPOINT_DIR... --parquet PATH --markdown PATH
    clueflow evaluate run --model-dir DIR --base-dir DIR --forget PATH --retain PATH... [--general PATH...]
                          [--task LM_EVAL_TASK[:METRIC]...] --run NAME --out PATH --summary PATH
    clueflow evaluate tasks SET.parquet... --out DIR
    clueflow tables table {table1,table2,table6} SUMMARY.json... [--reference RUN] --parquet PATH --markdown PATH
                          --csv PATH
    clueflow tables table3 --entry RUN PAIR BEFORE AFTER [--entry ...] --parquet PATH --markdown PATH --csv PATH

Subcommands that compute with a model (model generate, data filter, circuits build/resize, masks build, evaluate
run) take ``--dtype`` and ``--device auto|cpu|cuda|cuda:N`` (defaults: the config schema's).

Every user error exits with status 2 and one line on stderr: ``clueflow: <file>: <field>: <message>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import check_value, choices, default, key_schema
from .errors import ClueflowError, first_line
from .io import INTO, check_target, command_inputs
from .layout import CHECKPOINT_SUMMARY, MODEL_PROVENANCE
from .tables import RESULT_TABLES


def _cmd_config_validate(args) -> None:
    from .plan import load_plan

    plan = load_plan(*args.config)
    print(f"{plan.file}: valid ({len(plan.datasets)} data sets, forget={plan.forget}, "
          f"retain={','.join(plan.config['retain'])}; {len(plan.pairs)} pairs, {len(plan.runs)} runs, "
          f"{len(plan.checkpoints)} checkpoints)")


def _cmd_fetch(args) -> None:
    from .fetch import fetch
    from .layout import Layout
    from .plan import load_plan

    plan = load_plan(*args.config)
    manifest = args.manifest or Layout().fetched(model=plan.model)
    out = fetch(plan.fetch_spec(), manifest)
    print(f"{manifest}: model {out['model']['hub'] if out['model'] else '-'}, {len(out['datasets'])} hub data sets, "
          f"{len(out['tasks'])} lm-eval tasks cached in {out['cache_dir'] or 'the standard HF cache'}")


def _cmd_model_materialize(args) -> None:
    from .models import materialize

    out = materialize(args.source, args.out, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                      revision=args.revision, seed=args.seed)
    print(out)


def _cmd_model_generate(args) -> None:
    from .devices import model_device
    from .models import load_model, load_tokenizer

    tok = load_tokenizer(args.model_dir)
    model = load_model(args.model_dir, dtype=args.dtype, device=args.device)
    ids = tok(args.prompt, return_tensors="pt").input_ids.to(model_device(model))
    out = model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    print(args.prompt + tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))


def _cmd_data_build(args) -> None:
    from .data.build import write_set
    from .models import load_tokenizer
    from .plan import load_plan

    plan = load_plan(args.config)
    if args.set not in plan.datasets:
        raise ClueflowError(f"no data set {args.set!r} in the config", file=args.config, field="datasets")
    tok = load_tokenizer(args.model_dir, trust_remote_code=plan.config["model"]["trust_remote_code"])
    df = write_set(args.set, plan.config["datasets"][args.set], tok, args.out, seed=plan.dataset_seed(args.set))
    print(f"{args.out}: {len(df)} rows")


def _cmd_data_filter(args) -> None:
    from .data.filter import run_filter

    for r in run_filter(args.data, args.model_dir, args.out, args.accuracy, keep=args.keep,
                        batch_size=args.batch_size, dtype=args.dtype, device=args.device):
        print(f"{r['set']} [{r['format']}]: accuracy {r['accuracy']:.3f} (chance {r['chance']:.3f}), "
              f"kept {r['kept']}/{r['n']}")


def _cmd_data_accuracy_table(args) -> None:
    from .data.filter import accuracy_table
    from .io import write_table

    df = accuracy_table(args.accuracy)
    write_table(df, args.parquet, args.markdown)
    print(df.to_markdown(index=False, floatfmt=".3f"))


def _cmd_data_show(args) -> None:
    from .data.schema import read_set
    from .io import read_parquet_metadata

    df = read_set(args.path)
    print(f"{args.path}: {len(df)} rows; metadata {read_parquet_metadata(args.path)}")
    print(df.groupby(["split", "format"]).size().rename("rows").reset_index().to_markdown(index=False))
    row = df.iloc[0]
    print(f"\nexample {row.id}:\n  prompt:           {row.prompt!r}\n  answer:           {row.answer!r}\n"
          f"  corrupted_prompt: {row.corrupted_prompt!r}\n  corrupted_answer: {row.corrupted_answer!r}")


def _cmd_circuits_build(args) -> None:
    from .circuits.discover import run_circuit

    options = {"eap_ig": {"ig_steps": args.ig_steps}, "edge_pruning": {"steps": args.steps}}.get(args.method, {})
    s = run_circuit(args.data, args.model_dir, args.out, args.summary, method=args.method,
                    edge_fraction=args.edge_fraction, n_examples=args.n_examples, batch_size=args.batch_size,
                    max_length=args.max_length, batch_tokens=args.batch_tokens,
                    options=options, seed=args.seed, mlp_blocks=args.mlp_blocks,
                    node_fraction=args.node_fraction, selection=args.selection, dtype=args.dtype,
                    device=args.device)
    for d in ("noising", "denoising"):
        f = s[d]["faithfulness"]
        print(f"{d}: {s[d]['edges']} edges, {s[d]['nodes']} nodes, faithfulness {f['normalized']:.3f}, "
              f"KL {f['kl']:.3f}")
    print("gates: " + ", ".join(f"{k} {v}" for k, v in s["gates"].items()))


def _cmd_circuits_summary(args) -> None:
    from .circuits.discover import summarize

    print(summarize(args.path).to_markdown(index=False))


def _cmd_circuits_table(args) -> None:
    from .circuits.discover import circuit_table
    from .io import write_table

    df = circuit_table(args.summaries)
    write_table(df, args.parquet, args.markdown)
    print(df.to_markdown(index=False, floatfmt=".3f"))


def _cmd_cnf_build(args) -> None:
    from .logic import write_formulas

    print(write_formulas(args.forget, args.retain, args.cnf, args.wcnf))


def _cmd_cnf_summary(args) -> None:
    from .logic import read_dimacs

    f = read_dimacs(args.path)
    sides = {}
    for side, _ in f.var_names:
        sides[side] = sides.get(side, 0) + 1
    groups = [c for cs in f.comments.values() for c in cs]
    ops = {op: sum(1 for g in groups if g.split()[3] == op) for op in ("AND", "OR")}
    print(f"{args.path}: {len(f.var_names)} variables {sides}, {len(f.hard)} hard and {len(f.soft)} soft clauses, "
          f"{len(groups)} gate groups {ops}; " + "; ".join(f.header))


def _cmd_solve_run(args) -> None:
    from .solve import run_solve

    s = run_solve(args.cnf, args.wcnf, args.forget, args.retain, args.out, args.summary,
                  enumerate_limit=args.enumerate)
    print(f"phi satisfiable: {s['phi_satisfiable']}; minimum conflicts: {s['min_conflicts']}; {s['counts']}")


def _assignment(path):
    from .solve import read_assignment

    return read_assignment(path)


def _cmd_solve_summary(args) -> None:
    from .anatomy import parse_node

    df = _assignment(args.path)
    nodes = [parse_node(n) for n in df["node"]]
    df["layer"] = [str(n.layer) if n.layer is not None else "-" for n in nodes]
    df["type"] = [{"head": "attn"}.get(n.kind, n.kind) for n in nodes]
    table = df.pivot_table(index=["layer", "type"], columns="category", values="node", aggfunc="count", fill_value=0)
    print(table.reset_index().to_markdown(index=False))


def _cmd_solve_explain(args) -> None:
    from .logic import read_dimacs
    from .solve import explain

    print("\n".join(explain(args.node, read_dimacs(args.wcnf, "wcnf"), _assignment(args.assignment))))


def _cmd_masks_build(args) -> None:
    from .masks import run_masks

    s = run_masks(args.assignment, args.model_dir, args.forget_out, args.conflict_out, args.stats, base=args.base,
                  calibration=args.calibration, dtype=args.dtype, device=args.device)
    for k in ("forget", "conflict", "union"):
        print(f"{k}: unlearned parameter {100 * s[k]['unlearned_parameter']:.2f}% "
              f"({100 * s[k]['fraction_of_all_parameters']:.2f}% of all parameters)")


def _cmd_masks_summary(args) -> None:
    import pandas as pd

    from .masks import load_masks

    rows = []
    for name, m in load_masks(args.path).items():
        layer = next((p for p in name.split(".") if p.isdigit()), "-")
        rows.append(dict(layer=layer, parameter=name.split(".", 3)[-1] if layer != "-" else name,
                         selected=int(m.sum()), size=m.numel(), fraction=float(m.float().mean())))
    df = pd.DataFrame(rows)
    print(df.groupby("parameter")[["selected", "size"]].sum().assign(
        fraction=lambda d: d.selected / d["size"]).reset_index().to_markdown(index=False, floatfmt=".3f"))


def _cmd_circuits_resize(args) -> None:
    from .circuits.discover import resize_circuit

    s = resize_circuit(args.circuit, args.data, args.model_dir, args.out, args.summary,
                       edge_fraction=args.edge_fraction, batch_size=args.batch_size, max_length=args.max_length,
                       batch_tokens=args.batch_tokens, dtype=args.dtype, device=args.device)
    for d in ("noising", "denoising"):
        print(f"{d}: {s[d]['edges']} edges, KL {s[d]['faithfulness']['kl']:.3f}")


def _cmd_evaluate_run(args) -> None:
    from .data.schema import set_name
    from .evaluate.run import evaluate_model

    s = evaluate_model(args.model_dir, args.base_dir, args.forget, args.retain,
                       {set_name(p): p for p in args.general}, args.out, args.summary, run=args.run,
                       forget_ratio=args.forget_ratio, seed=args.seed, heldout_path=args.heldout,
                       standard_tasks=[n for n, _ in args.task],
                       metrics={n: m for n, m in args.task if m}, k=args.k,
                       max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, dtype=args.dtype,
                       device=args.device, autocast=args.autocast)
    print(", ".join(f"{k} {s[k]:.3f}" for k in ("forget_efficacy", "retain_utility", "general_utility",
                                                  "mia_auc_min_k", "one_minus_rouge_l", "unlearned_parameter")))


def _cmd_evaluate_tasks(args) -> None:
    from .data.schema import read_set, set_name
    from .evaluate.lmeval import write_tasks

    tasks = write_tasks({set_name(p): read_set(p) for p in args.sets}, args.out)
    print(f"lm_eval --model hf --model_args pretrained=<checkpoint> --include_path {args.out} "
          f"--tasks {','.join(tasks)}")


def _cmd_tables_table(args) -> None:
    from .tables import markdown_table, read_summaries, result_table, write_result_table

    df = result_table(args.kind, read_summaries(args.summaries), args.reference)
    write_result_table(df, args.parquet, args.markdown, args.csv)
    print(markdown_table(df))


def _cmd_tables_table3(args) -> None:
    from .tables import markdown_table, neuron_shares, write_result_table

    files, repeats = {}, {}
    for run, pair, before, after in args.entry:  # a run and pair given again: another seed's checkpoint
        seed = repeats[run, pair] = repeats.get((run, pair), -1) + 1
        files[("before", run, pair, seed)], files[("after", run, pair, seed)] = before, after
    df = neuron_shares(files)
    write_result_table(df, args.parquet, args.markdown, args.csv)
    print(markdown_table(df))


def _cmd_unlearn_run(args) -> None:
    from .unlearn.run import run_unlearn

    plan, (method, options, settings) = _config_run(args)
    cfg = plan.config
    masks = _clue_masks(args)
    seed = plan.run_seeds(args.run)[0] if args.seed is None else args.seed
    s = run_unlearn(args.model_dir, args.forget, args.retain, args.out, run=args.run, method=method,
                    options=options, settings=settings, seed=seed, masks=masks,
                    dtype=cfg["model"]["dtype"], device=cfg["model"]["device"],
                    trust_remote_code=cfg["model"]["trust_remote_code"], lr_search=args.lr_search,
                    autocast=cfg["model"]["autocast"])
    print(f"{args.out}: {s['method']} on {s['n_forget']} forget / {s['n_retain']} retain examples, {s['seconds']} s")


def _config_run(args):
    """The plan of ``--config`` and the (method, options, settings) of its run ``--run``."""
    from .plan import load_plan

    plan = load_plan(args.config)
    if args.run not in plan.runs:
        raise ClueflowError(f"no run {args.run!r} (runs: {', '.join(plan.runs)})", file=args.config,
                            field="unlearn.methods")
    return plan, plan.run_spec(args.run)


def _clue_masks(args) -> dict[str, Path] | None:
    if (args.forget_mask is None) != (args.conflict_mask is None):
        raise ClueflowError("give both --forget-mask and --conflict-mask, or neither", field="--forget-mask")
    return None if args.forget_mask is None else {"forget": args.forget_mask, "conflict": args.conflict_mask}


def _cmd_unlearn_lr_search(args) -> None:
    from .curve import run_curve

    plan, (method, options, settings) = _config_run(args)
    cfg = plan.config
    if settings["lr_grid"] is None:
        raise ClueflowError(f"run {args.run!r} has no lr_grid", file=args.config,
                            field=f"unlearn.methods.{args.run}.lr_grid")
    found = run_curve(args.model_dir, args.forget, args.retain, args.out, Path(args.out).with_suffix(".parquet"),
                      run=args.run, method=method, options=options, settings=settings, seed=cfg["seed"],
                      masks=_clue_masks(args), rule=cfg["unlearn"]["lr_pick"], level=cfg["unlearn"]["pick_fe"],
                      dtype=cfg["model"]["dtype"], device=cfg["model"]["device"],
                      trust_remote_code=cfg["model"]["trust_remote_code"], batch_size=cfg["evaluate"]["batch_size"],
                      autocast=cfg["model"]["autocast"])
    for s in found["scores"]:
        print(f"lr {s['lr']:g}: forget efficacy {s['forget_efficacy']:.3f}, retain accuracy "
              f"{s['retain_accuracy']:.3f}, score {s['score']:.3f}")
    print(f"{args.out}: picked lr {found['lr']:g}")


def _cmd_unlearn_methods(args) -> None:
    from .unlearn.methods import METHODS

    for name in METHODS.names():
        print(f"{name}: options {', '.join(METHODS.describe_options(name)) or '-'}")
        for line in METHODS.describe_defaults(name):
            print(f"  defaults {line}")


def _cmd_unlearn_table(args) -> None:
    from .io import write_table
    from .unlearn.run import runs_table

    df = runs_table(args.checkpoints)
    write_table(df, args.parquet, args.markdown)
    print(df.to_markdown(index=False, floatfmt=".3f"))


def _key(dotted: str):
    """An argparse type for a flag that sets config key ``dotted``: the schema's type and range (or pattern)."""
    spec = key_schema(dotted)
    cast = {"integer": int, "string": str}.get(spec.get("type"), float)

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if cast is int else 'a number'}")
        problem = check_value(dotted, value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = cast.__name__
    return parse


def _task(text: str) -> tuple[str, str]:
    """``NAME`` or ``NAME:METRIC``: an lm-eval task and the metric it is scored by (empty: the default)."""
    name, _, metric = text.partition(":")
    allowed = key_schema("evaluate.metrics")["additionalProperties"]["enum"]
    if metric and metric not in allowed:
        raise argparse.ArgumentTypeError(f"metric {metric!r} is not one of {', '.join(allowed)}")
    return name, metric


def _flag(parser: argparse.ArgumentParser, flag: str, dotted: str, **kw) -> None:
    """A flag with the type, range and default of config key ``dotted``."""
    parser.add_argument(flag, type=_key(dotted), default=default(dotted), **kw)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``clueflow: <command>: <message>``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"clueflow: {self.prog}: {message}\n")


def _model_flags(parser: argparse.ArgumentParser) -> None:
    """``--dtype`` and ``--device`` of a subcommand that computes with a model (config keys model.dtype/device)."""
    parser.add_argument("--dtype", default=default("model.dtype"), choices=choices("model.dtype"))
    _flag(parser, "--device", "model.device", help="auto (CUDA when present) | cpu | cuda | cuda:N")


def _run_flags(parser: argparse.ArgumentParser) -> None:
    """A configured unlearning run on one pair: config, run, model, sets, the pair's CLUE masks, output."""
    _required(parser, "--config", "--model-dir", "--forget", "--out")
    parser.add_argument("--run", required=True, help="a key of the config's unlearn.methods")
    parser.add_argument("--retain", required=True, nargs="+", type=Path)
    parser.add_argument("--forget-mask", type=Path, help="the pair's CLUE forget mask (forget.safetensors)")
    parser.add_argument("--conflict-mask", type=Path, help="the pair's CLUE conflict mask (conflict.safetensors)")


def _required(parser: argparse.ArgumentParser, *flags: str) -> None:
    for flag in flags:
        parser.add_argument(flag, required=True, type=Path)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="clueflow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    stages = parser.add_subparsers(dest="stage", required=True)

    cfg = stages.add_parser("config", help="configuration").add_subparsers(dest="cmd", required=True)
    p = cfg.add_parser("validate", help="every check the workflow runs at start (schema and cross-field)")
    p.add_argument("config", type=Path, nargs="+", help="config files, later ones merged over earlier ones")
    p.set_defaults(func=_cmd_config_validate)

    p = stages.add_parser("fetch", help="on a login node: cache the hub model, hub data sets and lm-eval task data "
                                        "(compute jobs then run offline)")
    p.add_argument("--config", type=Path, nargs="+", required=True, help="later files merged over earlier ones")
    p.add_argument("--manifest", type=Path, help="default: the workflow's results/fetch/<model>.json")
    p.set_defaults(func=_cmd_fetch, outputs={"manifest": None})

    model = stages.add_parser("model", help="model stage").add_subparsers(dest="cmd", required=True)
    p = model.add_parser("materialize", help="write a model source as an HF checkpoint directory")
    p.add_argument("--source", required=True)
    _required(p, "--out")
    p.add_argument("--dtype", default=default("model.dtype"), choices=choices("model.dtype"))
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--revision")
    p.add_argument("--seed", type=_key("seed"), default=0)
    p.set_defaults(func=_cmd_model_materialize, outputs={"out": MODEL_PROVENANCE})
    p = model.add_parser("generate", help="greedy generation from a checkpoint directory")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=_key("evaluate.max_new_tokens"), default=20)
    _model_flags(p)
    p.set_defaults(func=_cmd_model_generate)

    data = stages.add_parser("data", help="data stage").add_subparsers(dest="cmd", required=True)
    p = data.add_parser("build", help="build one configured data set")
    _required(p, "--config")
    p.add_argument("--set", required=True)
    p.add_argument("--model-dir", required=True, type=Path, help="checkpoint whose tokenizer defines alignment")
    _required(p, "--out")
    p.set_defaults(func=_cmd_data_build, outputs={"out": None})
    p = data.add_parser("filter", help="keep examples the base model answers correctly; record accuracy")
    _required(p, "--data", "--model-dir", "--out", "--accuracy")
    p.add_argument("--keep", default=default("filter.keep"), choices=choices("filter.keep"))
    _flag(p, "--batch-size", "filter.batch_size")
    _model_flags(p)
    p.set_defaults(func=_cmd_data_filter, outputs={"out": None, "accuracy": None})
    p = data.add_parser("accuracy-table", help="gather per-set accuracy JSON files into one table")
    p.add_argument("accuracy", nargs="+", type=Path)
    _required(p, "--parquet", "--markdown")
    p.set_defaults(func=_cmd_data_accuracy_table, outputs={"parquet": None, "markdown": None})
    p = data.add_parser("show", help="summarize a data-set parquet file")
    p.add_argument("path", type=Path)
    p.set_defaults(func=_cmd_data_show)

    circ = stages.add_parser("circuits", help="circuit stage").add_subparsers(dest="cmd", required=True)
    p = circ.add_parser("build", help="noising + denoising circuits of one filtered data set")
    _required(p, "--data", "--model-dir", "--out", "--summary")
    p.add_argument("--method", default=default("circuits.method"), help="a registered circuit method")
    _flag(p, "--ig-steps", "circuits.ig_steps", help="eap_ig integration steps")
    _flag(p, "--steps", "circuits.edge_pruning.steps", help="edge_pruning optimisation steps")
    _flag(p, "--edge-fraction", "circuits.edge_fraction")
    _flag(p, "--n-examples", "circuits.n_examples")
    _flag(p, "--batch-size", "circuits.batch_size")
    _flag(p, "--max-length", "circuits.max_length")
    _flag(p, "--batch-tokens", "circuits.batch_tokens")
    _flag(p, "--mlp-blocks", "circuits.mlp_blocks", help="neuron blocks per MLP, each a node (1: the whole MLP)")
    _flag(p, "--node-fraction", "circuits.node_fraction", help="most of the graph's nodes a circuit may touch")
    _flag(p, "--selection", "circuits.selection", help="under a node budget: top edges (edges) or top nodes first")
    p.add_argument("--seed", type=_key("seed"), default=0)
    _model_flags(p)
    p.set_defaults(func=_cmd_circuits_build, outputs={"out": None, "summary": None})
    p = circ.add_parser("summary", help="node/edge/gate counts per layer of a circuit file")
    p.add_argument("path", type=Path)
    p.set_defaults(func=_cmd_circuits_summary)
    p = circ.add_parser("table", help="gather circuit summaries into one table")
    p.add_argument("summaries", nargs="+", type=Path)
    _required(p, "--parquet", "--markdown")
    p.set_defaults(func=_cmd_circuits_table, outputs={"parquet": None, "markdown": None})
    p = circ.add_parser("resize", help="re-select a circuit file's circuits at another size from its scores")
    _required(p, "--circuit", "--data", "--model-dir", "--out", "--summary")
    p.add_argument("--edge-fraction", type=_key("circuits.edge_fraction"), required=True)
    _flag(p, "--batch-size", "circuits.batch_size")
    _flag(p, "--max-length", "circuits.max_length")
    _flag(p, "--batch-tokens", "circuits.batch_tokens")
    _model_flags(p)
    p.set_defaults(func=_cmd_circuits_resize, outputs={"out": None, "summary": None})

    cnf = stages.add_parser("cnf", help="CNF stage").add_subparsers(dest="cmd", required=True)
    p = cnf.add_parser("build", help="DIMACS Φ (.cnf) and MaxSAT (.wcnf) of a forget circuit vs retain circuits")
    _required(p, "--forget")
    p.add_argument("--retain", required=True, nargs="+", type=Path)
    _required(p, "--cnf", "--wcnf")
    p.set_defaults(func=_cmd_cnf_build, outputs={"cnf": None, "wcnf": None})
    p = cnf.add_parser("summary", help="variables, clauses and gate groups of a DIMACS file")
    p.add_argument("path", type=Path)
    p.set_defaults(func=_cmd_cnf_summary)

    slv = stages.add_parser("solve", help="solve stage").add_subparsers(dest="cmd", required=True)
    p = slv.add_parser("run", help="Φ by CaDiCaL, minimum conflicts by MaxSAT, node categories")
    _required(p, "--cnf", "--wcnf", "--forget")
    p.add_argument("--retain", required=True, nargs="+", type=Path)
    _required(p, "--out", "--summary")
    _flag(p, "--enumerate", "logic.enumerate_limit", help="optimal solutions to enumerate (stability)")
    p.set_defaults(func=_cmd_solve_run, outputs={"out": None, "summary": None})
    p = slv.add_parser("summary", help="categories per layer and module type of an assignment")
    p.add_argument("path", type=Path)
    p.set_defaults(func=_cmd_solve_summary)
    p = slv.add_parser("explain", help="why a node has its category: the clauses that force it")
    p.add_argument("node")
    _required(p, "--wcnf", "--assignment")
    p.set_defaults(func=_cmd_solve_explain)

    msk = stages.add_parser("masks", help="masks stage").add_subparsers(dest="cmd", required=True)
    p = msk.add_parser("build", help="forget and conflict masks from an assignment")
    _required(p, "--assignment", "--model-dir", "--forget-out", "--conflict-out", "--stats")
    p.add_argument("--base", default=default("masks.base"), choices=choices("masks.base"))
    p.add_argument("--calibration", type=Path, help="forget data set (parquet) for the WANDA base")
    _model_flags(p)
    p.set_defaults(func=_cmd_masks_build, outputs={"forget_out": None, "conflict_out": None, "stats": None})
    p = msk.add_parser("summary", help="selected entries per parameter type of a mask file")
    p.add_argument("path", type=Path)
    p.set_defaults(func=_cmd_masks_summary)

    unl = stages.add_parser("unlearn", help="unlearning stage").add_subparsers(dest="cmd", required=True)
    p = unl.add_parser("run", help="train one configured run on one forget/retain pair")
    _run_flags(p)
    p.add_argument("--seed", type=_key("seed"), help="training order and forget rows drawn (default: the run's "
                                                     "first seed)")
    p.add_argument("--lr-search", type=Path, help="the run's lr search file (clueflow unlearn lr-search): its pick "
                                                  "replaces the lr")
    p.set_defaults(func=_cmd_unlearn_run, outputs={"out": CHECKPOINT_SUMMARY})
    p = unl.add_parser("lr-search", help="pick a run's lr from its lr_grid on the validation split (config seed; "
                                         "unlearn.lr_pick); the scored rows beside --out as .parquet")
    _run_flags(p)
    p.set_defaults(func=_cmd_unlearn_lr_search, outputs={"out": None})
    p = unl.add_parser("methods", help="registered unlearning methods and their options")
    p.set_defaults(func=_cmd_unlearn_methods)
    p = unl.add_parser("table", help="gather unlearning runs into one table")
    p.add_argument("checkpoints", nargs="+", type=Path)
    _required(p, "--parquet", "--markdown")
    p.set_defaults(func=_cmd_unlearn_table, outputs={"parquet": None, "markdown": None})

    ev = stages.add_parser("evaluate", help="evaluation stage").add_subparsers(dest="cmd", required=True)
    p = ev.add_parser("run", help="evaluate one model on one forget/retain pair (per-example parquet + summary)")
    _required(p, "--model-dir", "--base-dir", "--forget", "--out", "--summary")
    p.add_argument("--retain", required=True, nargs="+", type=Path)
    p.add_argument("--heldout", type=Path, help="the set whose test rows are the held-out forget rows "
                                                "(default --forget; the unfiltered set for the paper's protocol)")
    p.add_argument("--general", nargs="*", type=Path, default=[], help="built-in sets run as local lm-eval tasks")
    p.add_argument("--task", nargs="*", type=_task, default=[],
                   help="standard lm-eval tasks or groups, NAME or NAME:METRIC (acc | acc_norm; default acc)")
    p.add_argument("--run", default="origin")
    _flag(p, "--forget-ratio", "unlearn.forget_ratio")
    p.add_argument("--seed", type=_key("seed"), default=0)
    _flag(p, "--k", "evaluate.k")
    _flag(p, "--max-new-tokens", "evaluate.max_new_tokens")
    _flag(p, "--batch-size", "evaluate.batch_size")
    _model_flags(p)
    p.add_argument("--autocast", default=default("model.autocast"), choices=[c for c in choices("model.autocast") if c],
                   help="forward passes under torch.autocast in this dtype (model.autocast; default off)")
    p.set_defaults(func=_cmd_evaluate_run, outputs={"out": None, "summary": None})
    p = ev.add_parser("tasks", help="write lm-eval task YAMLs for built-in sets (their test split)")
    p.add_argument("sets", nargs="+", type=Path)
    _required(p, "--out")
    p.set_defaults(func=_cmd_evaluate_tasks, outputs={"out": INTO})

    tab = stages.add_parser("tables", help="tables stage").add_subparsers(dest="cmd", required=True)
    p = tab.add_parser("table", help="table1 / table2 / table6 from evaluation summaries")
    p.add_argument("kind", choices=sorted(RESULT_TABLES))
    p.add_argument("summaries", nargs="+", type=Path)
    p.add_argument("--reference", default="clue", help="table2: the run its rows are compared with")
    _required(p, "--parquet", "--markdown", "--csv")
    p.set_defaults(func=_cmd_tables_table, outputs={"parquet": None, "markdown": None, "csv": None})
    p = tab.add_parser("table3", help="forget/conflict node shares before and after unlearning")
    p.add_argument("--entry", nargs=4, action="append", required=True, metavar=("RUN", "PAIR", "BEFORE", "AFTER"),
                   help="a run, its pair, and the assignment files before and after unlearning (a run and pair "
                        "given again: another seed's checkpoint)")
    _required(p, "--parquet", "--markdown", "--csv")
    p.set_defaults(func=_cmd_tables_table3, outputs={"parquet": None, "markdown": None, "csv": None})
    return parser


def _paths(value) -> list[Path]:
    if isinstance(value, Path):
        return [value]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _paths(v)]
    return []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    outputs = getattr(args, "outputs", {})
    inputs = [p for dest, value in vars(args).items() if dest not in outputs for p in _paths(value)]
    try:
        with command_inputs(inputs):
            for dest, marker in outputs.items():  # at start, not after hours of work
                if getattr(args, dest) is not None:  # an optional output with a derived default
                    check_target(getattr(args, dest), directory=marker is not None, marker=marker)
            args.func(args)
    except ClueflowError as err:
        print(f"clueflow: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a defect no reader caught: still one line, the traceback on request
        if args.debug:
            raise
        print(f"clueflow: unexpected {type(err).__name__}: {first_line(err)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
