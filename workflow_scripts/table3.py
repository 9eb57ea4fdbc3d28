from common import logged

from clueflow.tables import neuron_shares, write_result_table

with logged(snakemake.log[0]):
    o = snakemake.output
    files = {tuple(key.split(":")): path for key, path in snakemake.input.items()}
    write_result_table(neuron_shares(files, snakemake.params.methods), o.parquet, o.markdown, o.csv)
