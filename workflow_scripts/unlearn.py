from pathlib import Path

from common import logged

from clueflow.unlearn.run import run_unlearn

with logged(snakemake.log[0], threads=snakemake.threads):
    i, p = snakemake.input, snakemake.params
    summary = run_unlearn(
        i.model, i.forget, list(i.retain), snakemake.output[0], **p.spec, seed=p.seed,
        masks_dir=Path(i.masks[0]).parent if i.masks else None, dtype=p.model["dtype"],
        trust_remote_code=p.model["trust_remote_code"])
    print({k: summary[k] for k in ("run", "method", "n_forget", "n_retain", "seconds")})
