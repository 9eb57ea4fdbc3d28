from common import keyed, logged

from clueflow import tables
from clueflow.io import write_table
from clueflow.masks import load_masks

with logged(snakemake.log[0]):
    out, masks = snakemake.output, {}
    for (pair, kind), path in keyed(snakemake.params.entries, snakemake.input).items():
        masks.setdefault(pair, {})[kind] = load_masks(path)
    dist = tables.mask_distribution(masks)
    tables.mask_distribution_figure(dist, out.figure)
    write_table(dist, out.parquet)
