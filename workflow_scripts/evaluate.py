from common import device, keyed, logged

from clueflow.evaluate.run import evaluate_model

with logged(snakemake.log[0], threads=snakemake.threads):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    summary = evaluate_model(i.model, i.base, i.forget, list(i.retain), keyed(p.general_sets, i.general), o.parquet,
                             o.summary, run=p.run, seed=p.seed, heldout_path=i.heldout,
                             general_accuracy=keyed(p.general_sets, i.general_accuracy), dtype=p.dtype,
                             autocast=p.autocast,
                             device=device(snakemake),
                             trust_remote_code=p.trust_remote_code, **p.evaluate)
    print({k: summary[k] for k in ("forget_efficacy", "retain_utility", "general_utility", "seconds")})
