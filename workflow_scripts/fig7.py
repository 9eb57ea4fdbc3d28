from common import keyed, logged

from clueflow import tables
from clueflow.io import write_table
from clueflow.masks import load_masks
from clueflow.sensitivity import trained_entries

with logged(snakemake.log[0]):
    i, p, out, masks = snakemake.input, snakemake.params, snakemake.output, {}
    for (pair, kind), path in keyed(p.entries, i.masks).items():
        masks.setdefault(pair, {})[kind] = load_masks(path)
    for (pair, run), checkpoint in keyed(p.runs, i.checkpoints).items():
        masks[pair][run] = trained_entries(checkpoint)
    dist = tables.mask_distribution(masks)
    tables.mask_distribution_figure(dist, out.figure)
    write_table(dist, out.parquet)
