from common import logged

from clueflow.logic import write_formulas

with logged(snakemake.log[0]):
    print(write_formulas(snakemake.input.forget, snakemake.input.retain, snakemake.output.cnf, snakemake.output.wcnf,
                         prefer_fewer_forget=snakemake.params.prefer_fewer_forget))
