# gendiag: why fine-tuned LLMs fail to generalise, from raw email corpora to paper figures.
# Read DESIGN.md for the graph; config/README.md for every config key.

from snakemake.utils import min_version

min_version("9.0")


# A config given with --configfile replaces the default study rather than merging into it (a
# merge would silently keep the default's corpora and models); --config key=value still overrides.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/circuits.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        study_outputs(),
