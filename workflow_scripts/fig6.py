from common import logged

from clueflow import tables

with logged(snakemake.log[0]):
    p = snakemake.params
    tables.forget_ratio_figure(tables.read_summaries(snakemake.input, p.methods), p.ratios, snakemake.output[0])
