from common import logged

from clueflow.tables import overview, privacy, read_summaries, write_result_table

with logged(snakemake.log[0]):
    o = snakemake.output
    summaries = read_summaries(snakemake.input, snakemake.params.methods)
    table = privacy(summaries) if snakemake.wildcards.table == "table6" else overview(summaries)
    write_result_table(table, o.parquet, o.markdown, o.csv)
