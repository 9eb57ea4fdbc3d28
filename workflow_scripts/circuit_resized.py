from common import device, logged

from clueflow.circuits.discover import resize_circuit

with logged(snakemake.log[0], threads=snakemake.threads):
    i, p = snakemake.input, snakemake.params
    resize_circuit(i.circuit, i.data, i.model, snakemake.output.edges, snakemake.output.summary,
                   edge_fraction=p.edge_fraction, batch_size=p.batch_size, max_length=p.max_length,
                   batch_tokens=p.batch_tokens, dtype=p.dtype,
                   device=device(snakemake), trust_remote_code=p.trust_remote_code)
