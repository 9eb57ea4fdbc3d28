from common import keyed, logged

from clueflow.tables import neuron_shares, write_result_table

with logged(snakemake.log[0]):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    files = {}
    for when in ("before", "after"):
        files.update({(when, *key): path for key, path in keyed(p.entries, i[when]).items()})
    write_result_table(neuron_shares(files, p.methods), o.parquet, o.markdown, o.csv)
