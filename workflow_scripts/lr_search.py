from common import device, logged

from clueflow.unlearn.lr import search_lr

with logged(snakemake.log[0], threads=snakemake.threads):
    i, p = snakemake.input, snakemake.params
    masks = {"forget": i.forget_mask, "conflict": i.conflict_mask} if "forget_mask" in i.keys() else None
    found = search_lr(i.model, i.forget, list(i.retain), snakemake.output[0], **p.spec, seed=p.seed, masks=masks,
                      dtype=p.model["dtype"], device=device(snakemake), trust_remote_code=p.model["trust_remote_code"],
                      batch_size=p.batch_size, autocast=p.autocast)
    print({k: found[k] for k in ("run", "pair", "grid", "lr")})
