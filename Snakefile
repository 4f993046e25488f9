# Fine-tuning strategy comparison on text classification (RoBERTa on IMDB by default).
# Stages: [fetch_model, fetch_data: hub sources, where Snakemake runs] -> prepare_data
#         -> tokenize (once) -> finetune (per strategy x seed, gpu=1)
#         -> evaluate -> report (summary.csv, figures, report.md).
# Run:    snakemake --cores 1 --resources gpu=1
# Config: config/config.yaml (documents every key; docs/configuration.md lists the others).
# CPU check, offline, on the committed sample: snakemake --cores 2 --resources gpu=1 --directory .test


from snakemake.utils import min_version

# 9.x: profile keys and set-resources as used in profiles/, the SLURM executor plugin 2.
min_version("9.0")


configfile: "config/config.yaml"


# The HTML report (snakemake --report report.html) opens with this summary of the study.
report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/tokenize.smk"
include: "workflow/rules/tuning.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        summary="results/summary.csv",
        report="results/report.md",
        figures=PLAN.figures,
