from common import device, keyed, logged

from clueflow.curve import run_curve

with logged(snakemake.log[0], threads=snakemake.threads):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    masks = {"forget": i.forget_mask, "conflict": i.conflict_mask} if "forget_mask" in i.keys() else None
    evaluation = None
    if p.evaluation is not None:  # a curve of the tradeoff report: its test rows and general tasks too
        e = p.evaluation
        evaluation = dict(heldout_path=i.heldout, retain_paths=list(i.test_retain), general=e["general"],
                          general_paths=keyed(e["general_sets"], i.general),
                          general_accuracy=keyed(e["general_sets"], i.general_accuracy),
                          standard_tasks=e["standard_tasks"], general_band=e["general_band"],
                          general_limit=e["general_limit"], metrics=e["metrics"])
    found = run_curve(i.model, i.forget, list(i.retain), o.json, o.parquet, **p.spec, seed=p.seed, masks=masks,
                      evaluation=evaluation, dtype=p.model["dtype"], device=device(snakemake),
                      trust_remote_code=p.model["trust_remote_code"], batch_size=p.batch_size, checkpoint_dir=o.picked,
                      autocast=p.autocast)
    print({k: found[k] for k in ("run", "pair", "seed", "grid", "lr", "reached")})
