from common import keyed, logged

from clueflow import tables
from clueflow.io import read_json, write_table

with logged(snakemake.log[0]):
    i, p, out = snakemake.input, snakemake.params, snakemake.output
    evaluations = {key: read_json(path) for key, path in keyed(p.evaluations, i.evaluations).items()}
    circuits = {}
    for (run, name), path in keyed(p.entries, i.circuits).items():
        circuits.setdefault(run, {})[name] = read_json(path)
    sweep = tables.sparsity_sweep(evaluations, circuits, p.forget)
    tables.sparsity_figure(sweep, out.figure)
    write_table(sweep, out.parquet)
