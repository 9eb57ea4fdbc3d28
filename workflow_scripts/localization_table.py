from common import logged

from clueflow.io import write_table
from clueflow.masks import localization_table

with logged(snakemake.log[0]):
    df = localization_table(snakemake.input.solve, snakemake.input.masks)
    write_table(df, snakemake.output.parquet, snakemake.output.markdown)
