from common import device, logged

from clueflow.circuits.discover import run_circuit

with logged(snakemake.log[0], threads=snakemake.threads):
    p, c = snakemake.params, snakemake.params.circuits
    run_circuit(snakemake.input.data, snakemake.input.model, snakemake.output.edges, snakemake.output.summary,
                method=c["method"], edge_fraction=c["edge_fraction"], n_examples=c["n_examples"],
                batch_size=c["batch_size"], max_length=c["max_length"], batch_tokens=c["batch_tokens"],
                options=c["options"], seed=p.seed, mlp_blocks=c["mlp_blocks"],
                node_fraction=c["node_fraction"], selection=c["selection"], dtype=p.dtype,
                device=device(snakemake), trust_remote_code=p.trust_remote_code)
