from common import logged

from clueflow import tables

with logged(snakemake.log[0]):
    p, out = snakemake.params, snakemake.output
    summaries = tables.read_summaries(snakemake.input)
    curves = tables.retain_count_figure(summaries, out.figure, general=p.general)
    tables.write_result_table(curves, out.parquet, out.markdown)
