# Localization-guided LLM unlearning (CLUE and baselines) as a Snakemake workflow.
#   snakemake all --cores 2                      # the embedded default (SmolLM2-135M-Instruct, offline)
#   snakemake all --cores 2 --configfile my.yaml # your experiment (merged over config.yaml)
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from clueflow.config import read_config
from clueflow.errors import ClueflowError

min_version("9.0")

# a directory or bytes that are not UTF-8 in place of config.yaml: one line naming it, not the directive's traceback
if Path("config.yaml").exists():
    try:
        read_config("config.yaml")
    except ClueflowError as err:
        raise WorkflowError(f"invalid configuration: {err}") from None


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
