# align-mamba: the rules live in workflow/rules; every value comes from params.yaml.
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/confirm.smk"
include: "workflow/rules/secrets.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/report.smk"


rule all:
    """The default target: the report over every cell of the grid."""
    input:
        "results/report.html",
        "results/metrics.json",
