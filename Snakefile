# pixeldit-bench: train -> sample -> evaluate -> report. Entry only; the rules live in workflow/rules/.
#   snakemake --cores all                                              # the embedded default (digits32, CPU)
#   snakemake --cores all --configfile workflow/config/imagenet256.yaml --profile workflow/profiles/slurm
from snakemake.utils import min_version

min_version("9.0")


# `snakemake --report FILE.html` after a run: Snakemake's own report over the annotated outputs below.
report: "workflow/report/workflow.rst"


# --configfile replaces the embedded default instead of being merged into it (Snakemake merges dicts).
if not config:

    configfile: "workflow/config/default.yaml"


include: "workflow/rules/common.smk"


# A text-to-image config (workflow/config/t2i*.yaml) may have no class-conditional runs, nor a dataset.
if "dataset" in config:

    include: "workflow/rules/data.smk"


if RUNS or AUTOENCODERS:

    include: "workflow/rules/latent.smk"
    include: "workflow/rules/train.smk"
    include: "workflow/rules/sample.smk"
    include: "workflow/rules/eval.smk"


include: "workflow/rules/t2i.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        report_outputs(),
        rfid_files(),
        metric_files(),  # targets themselves, so a deleted result is recomputed (with the report after it)
        t2i_metric_files(),
