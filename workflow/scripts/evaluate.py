import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare.contract import start_job

# Before torch is imported: the log, no network, and for GPU rules a device of the job's own.
start_job(log_path=snakemake.log[0], gpus=snakemake.resources.get("gpu", 0))
from ftcompare.evaluate import evaluate_job  # noqa: E402
from ftcompare.train import progress  # noqa: E402

evaluate_job(
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
