from common import logged

from clueflow.tradeoff import tradeoff, write_tradeoff

with logged(snakemake.log[0]):
    i, p, o = snakemake.input, snakemake.params, snakemake.output
    entries = [dict(run=run, pair=pair, seed=seed, json=j, parquet=q, origin=e)
               for (run, pair, seed), j, q, e in zip(p.entries, i.json, i.parquet, i.origin)]
    points, table, areas = tradeoff(entries, p.methods, p.levels, resamples=p.resamples, seed=p.seed)
    write_tradeoff(points, table, areas, dict(o.items()), caption=p.provenance)
    print(table.to_string())
