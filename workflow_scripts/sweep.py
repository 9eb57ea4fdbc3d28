from common import logged

from clueflow import tables

with logged(snakemake.log[0]):
    p, out = snakemake.params, snakemake.output
    summaries = tables.read_summaries(snakemake.input, p.methods)
    if snakemake.wildcards.sweep == "fig6":
        curves = tables.parameter_share_figure(summaries, out.figure)
    else:
        curves = tables.forget_count_figure(summaries, p.counts, out.figure)
    tables.write_result_table(curves, out.parquet, out.markdown)
