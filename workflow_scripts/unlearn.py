from common import device, logged

from clueflow.unlearn.run import run_unlearn

with logged(snakemake.log[0], threads=snakemake.threads):
    i, p = snakemake.input, snakemake.params
    masks = {"forget": i.forget_mask, "conflict": i.conflict_mask} if "forget_mask" in i.keys() else None
    summary = run_unlearn(
        i.model, i.forget, list(i.retain), snakemake.output[0], **p.spec, seed=p.seed, masks=masks,
        dtype=p.model["dtype"], device=device(snakemake), trust_remote_code=p.model["trust_remote_code"])
    print({k: summary[k] for k in ("run", "method", "n_forget", "n_retain", "seconds")})
