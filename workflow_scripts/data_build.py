from common import logged

from clueflow.data.build import write_set
from clueflow.models import load_tokenizer

with logged(snakemake.log[0], threads=snakemake.threads):
    tok = load_tokenizer(snakemake.input.model)
    write_set(snakemake.wildcards.set, snakemake.params.spec, tok, snakemake.output[0], seed=snakemake.params.seed)
