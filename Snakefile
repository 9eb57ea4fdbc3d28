# Localization-guided LLM unlearning (CLUE and baselines) as a Snakemake workflow.
#   snakemake all --cores 2                      # the embedded default (SmolLM2-135M-Instruct, offline)
#   snakemake all --cores 2 --configfile my.yaml # your experiment (merged over config.yaml)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/fetch.smk"
include: "rules/models.smk"
include: "rules/data.smk"
include: "rules/circuits.smk"
include: "rules/logic.smk"
include: "rules/solve.smk"
include: "rules/masks.smk"
include: "rules/lr.smk"
include: "rules/unlearn.smk"
include: "rules/evaluate.smk"
include: "rules/tables.smk"


rule all:
    default_target: True
    input:
        PLAN.targets(L),
