import json
from pathlib import Path

from common import keyed, logged

from clueflow import tables
from clueflow.io import write_table


def read(path):
    return json.loads(Path(path).read_text())


with logged(snakemake.log[0]):
    i, p, out = snakemake.input, snakemake.params, snakemake.output
    evaluations = {key: read(path) for key, path in keyed(p.evaluations, i.evaluations).items()}
    circuits = {}
    for (run, name), path in keyed(p.entries, i.circuits).items():
        circuits.setdefault(run, {})[name] = read(path)
    sweep = tables.sparsity_sweep(evaluations, circuits, p.forget)
    tables.sparsity_figure(sweep, out.figure)
    write_table(sweep, out.parquet)
