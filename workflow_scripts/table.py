from common import logged

from clueflow.tables import read_summaries, result_table, write_result_table

with logged(snakemake.log[0]):
    o, p = snakemake.output, snakemake.params
    summaries = read_summaries(snakemake.input, p.methods)
    write_result_table(result_table(snakemake.wildcards.table, summaries, p.reference), o.parquet, o.markdown, o.csv)
