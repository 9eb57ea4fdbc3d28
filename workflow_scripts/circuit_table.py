from common import logged

from clueflow.circuits.discover import circuit_table
from clueflow.io import write_table

with logged(snakemake.log[0]):
    write_table(circuit_table(snakemake.input), snakemake.output.parquet, snakemake.output.markdown)
