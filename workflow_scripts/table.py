from common import logged

from clueflow.tables import read_summaries, result_table, write_result_table

with logged(snakemake.log[0]):
    o = snakemake.output
    summaries = read_summaries(snakemake.input, snakemake.params.methods)
    write_result_table(result_table(snakemake.wildcards.table, summaries), o.parquet, o.markdown, o.csv)
