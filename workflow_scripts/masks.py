from common import device, logged

from clueflow.masks import run_masks

with logged(snakemake.log[0], threads=snakemake.threads):
    i, o, p, m = snakemake.input, snakemake.output, snakemake.params, snakemake.params.masks
    print(run_masks(i.assignment, i.model, o.forget, o.conflict, o.stats, base=m["base"],
                    wanda_ratio=m["wanda_ratio"], calibration=i.calibration, n_calibration=m["n_calibration"],
                    dtype=p.dtype, device=device(snakemake)))
