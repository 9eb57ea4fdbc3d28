from common import logged

from clueflow.io import write_table
from clueflow.unlearn.run import runs_table

with logged(snakemake.log[0]):
    df = runs_table(snakemake.input)
    write_table(df, snakemake.output.parquet, snakemake.output.markdown)
