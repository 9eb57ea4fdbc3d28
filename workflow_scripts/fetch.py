from common import logged

from clueflow.fetch import fetch

with logged(snakemake.log[0]):
    fetch(snakemake.params.spec, snakemake.output[0])
