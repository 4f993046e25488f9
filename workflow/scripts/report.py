import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare.contract import start_job

# Before torch is imported: the log, no network, and for GPU rules a device of the job's own.
start_job(log_path=snakemake.log[0])
from ftcompare.report import report_job  # noqa: E402

report_job(
    train_records=snakemake.input.train_records,
    eval_records=snakemake.input.eval_records,
    prediction_paths=snakemake.input.predictions,
    summary_path=snakemake.output.summary,
    comparison_path=snakemake.output.by_strategy,
    report_path=snakemake.output.report,
    page_path=snakemake.output.page,
    figure_paths=snakemake.output.figures,
    reference=snakemake.params.reference,
    baseline=snakemake.params.baseline,
    # Each tuned cell's trial summary and selection (none when tuning is off).
    tuning_summary=list(snakemake.input.get("summaries", [])),
    selected=list(snakemake.input.get("selections", [])),
    sort_by=snakemake.params.sort_by,
    reference_recipe=snakemake.input.reference_recipe,
    # Outputs and params of a study across tasks, where the rule declares them.
    across_path=snakemake.output.get("across"),
    tuning_path=snakemake.output.get("tuning_summary"),
    datasets=snakemake.params.get("datasets"),
    equivalence_margin=snakemake.params.equivalence_margin,
)
