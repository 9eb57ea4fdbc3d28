from common import logged

from clueflow.data.filter import accuracy_table
from clueflow.io import write_table

with logged(snakemake.log[0]):
    write_table(accuracy_table(snakemake.input), snakemake.output.parquet, snakemake.output.markdown)
