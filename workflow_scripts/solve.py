from common import logged

from clueflow.solve import run_solve

with logged(snakemake.log[0]):
    i, o = snakemake.input, snakemake.output
    print(run_solve(i.cnf, i.wcnf, i.forget, i.retain, o.assignment, o.summary,
                    enumerate_limit=snakemake.params.enumerate_limit))
