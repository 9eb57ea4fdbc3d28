from common import logged

from clueflow import tables
from clueflow.io import write_table, write_text

with logged(snakemake.log[0]):
    p, out = snakemake.params, snakemake.output
    summaries = tables.read_summaries(snakemake.input)
    curves = tables.retain_count_figure(summaries, out.figure, general=p.general)
    write_table(curves, out.parquet)
    write_text(out.markdown, tables.markdown_table(curves) + "\n")
