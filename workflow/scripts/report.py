import _bootstrap  # noqa: F401  (makes ftcompare importable)

from pathlib import Path

from ftcompare import jobs

# Before torch is imported: the log, no network, and for GPU rules a device of the job's own.
jobs.start_job(log_path=snakemake.log[0])
jobs.report(
    train_records=snakemake.input.train_records,
    eval_records=snakemake.input.eval_records,
    summary_path=snakemake.output.summary,
    report_path=snakemake.output.report,
    figures_dir=Path(snakemake.output.figures[0]).parent,
)
