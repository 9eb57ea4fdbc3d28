import json
from pathlib import Path

from common import logged

from clueflow.io import write_table
from clueflow.masks import load_masks
from clueflow import tables

with logged(snakemake.log[0]):
    p, out = snakemake.params, snakemake.output
    if p.kind == "fig7":
        paths = list(snakemake.input)
        masks = {}
        for path in paths:
            pair, kind = path.split("/")[-2], path.split("/")[-1].split(".")[0]
            masks.setdefault(pair, {})[kind] = load_masks(path)
        dist = tables.mask_distribution(masks)
        tables.mask_distribution_figure(dist, out.figure)
        write_table(dist, out.parquet)
    elif p.kind == "fig4":
        inp = snakemake.input
        runs, circuits = {}, {}
        for key, path in inp.items():
            kind, *rest = key.split(":")
            if kind == "eval":
                runs[rest[0]] = json.loads(Path(path).read_text())
            elif kind == "circuit":
                circuits.setdefault(rest[0], {})[rest[1]] = json.loads(Path(path).read_text())
        sweep = tables.sparsity_sweep(runs, json.loads(Path(inp.origin).read_text()), circuits, p.forget)
        tables.sparsity_figure(sweep, out.figure)
        write_table(sweep, out.parquet)
    elif p.kind == "fig3":
        tables.retain_count_figure(tables.read_summaries(snakemake.input), out[0])
    else:
        tables.forget_ratio_figure(tables.read_summaries(snakemake.input, p.methods), p.ratios, out[0])
