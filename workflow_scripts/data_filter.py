from common import device, logged

from clueflow.data.filter import run_filter

with logged(snakemake.log[0], threads=snakemake.threads):
    p = snakemake.params
    run_filter(snakemake.input.data, snakemake.input.model, snakemake.output.data, snakemake.output.accuracy,
               keep=p.keep, batch_size=p.batch_size, dtype=p.dtype, device=device(snakemake),
               trust_remote_code=p.trust_remote_code, autocast=p.autocast)
