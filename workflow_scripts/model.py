from common import logged

from clueflow.models import materialize

with logged(snakemake.log[0], threads=snakemake.threads):
    p = snakemake.params.model
    materialize(p["source"], snakemake.output[0], dtype=p["dtype"], trust_remote_code=p["trust_remote_code"],
                revision=p["revision"], seed=p["seed"] or 0)
