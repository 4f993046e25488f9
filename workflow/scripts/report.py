import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare import jobs

jobs.setup_logging(snakemake.log[0])
jobs.report(
    train_records=snakemake.input.train_records,
    eval_records=snakemake.input.eval_records,
    summary_path=snakemake.output.summary,
    report_path=snakemake.output.report,
    figure_paths=snakemake.output.figures,
    reference=snakemake.params.reference,
)
