from common import logged

from clueflow import tables

with logged(snakemake.log[0]):
    tables.retain_count_figure(tables.read_summaries(snakemake.input), snakemake.output[0])
