import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare import jobs, progress

# Before torch is imported: the log, no network, and for GPU rules a device of the job's own.
jobs.start_job(log_path=snakemake.log[0], gpus=snakemake.resources.get("gpu", 0))
jobs.evaluate_job(
    train_record_path=snakemake.input.record,
    tokenized_dir=snakemake.input.dataset,
    model_dir=snakemake.input.model,
    record_path=snakemake.output.record,
    predictions_path=snakemake.output.predictions,
    card_path=snakemake.output.card,
    attempt_path=snakemake.params.attempt,
    retry_marker=snakemake.params.retry_marker,
    base_model_dir=snakemake.input.get("base_model") or None,
    data_summary_path=snakemake.input.data_summary,
    study_model=snakemake.params.study_model,
    files=progress.job_files(attempt=snakemake.params.attempt, wildcards=dict(snakemake.wildcards.items())),
)
