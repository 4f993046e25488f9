import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare import jobs

jobs.setup_logging(snakemake.log[0])
jobs.evaluate(
    train_record_path=snakemake.input.record,
    tokenized_dir=snakemake.input.dataset,
    model_dir=snakemake.input.model,
    record_path=snakemake.output.record,
    predictions_path=snakemake.output.predictions,
    attempt_path=snakemake.params.attempt,
    retry_marker=snakemake.params.retry_marker,
)
