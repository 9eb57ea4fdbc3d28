from common import logged

from clueflow.sensitivity import sensitivity, sensitivity_figure
from clueflow.tables import read_summaries, write_result_table

with logged(snakemake.log[0]):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    clue = [i.clue_masks[2 * n:2 * n + 2] for n in range(len(p.masks))]  # forget, conflict of each entry
    masks = {tuple(entry): (ckpt, pair_masks) for entry, ckpt, pair_masks in zip(p.masks, i.checkpoints, clue)}
    table = sensitivity(read_summaries(i.summaries), p.runs, masks)
    write_result_table(table, o.parquet, o.markdown, o.csv)
    sensitivity_figure(table, o.figure)
    print(table.to_string(index=False))
