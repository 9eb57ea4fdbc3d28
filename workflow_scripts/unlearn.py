from common import device, logged

from clueflow.unlearn.run import launch, run_unlearn

with logged(snakemake.log[0], threads=snakemake.threads):
    i, p = snakemake.input, snakemake.params
    masks = {"forget": i.forget_mask, "conflict": i.conflict_mask} if "forget_mask" in i.keys() else None
    args = dict(model_dir=i.model, forget_path=i.forget, retain_paths=list(i.retain), out_dir=snakemake.output[0],
                **p.spec, seed=p.seed, masks=masks, dtype=p.model["dtype"], device=device(snakemake),
                trust_remote_code=p.model["trust_remote_code"], lr_search=i.get("lr"),
                picked=i.get("picked"), autocast=p.autocast)
    gpus = snakemake.resources.get("gpu", 0)  # unlearn.gpus of the run: one process per GPU the job holds
    # the sweep's checkpoint of its pick is adopted in this process: nothing to train
    summary = launch(gpus, **args) if gpus > 1 and args["picked"] is None else run_unlearn(**args)
    print({k: summary[k] for k in ("run", "method", "n_forget", "n_retain", "seconds")},
          *([f"adopted from {args['picked']}"] if args["picked"] else []))
