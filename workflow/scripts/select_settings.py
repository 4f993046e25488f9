import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare import jobs

jobs.start_job(log_path=snakemake.log[0])
jobs.select_settings_job(
    trial_records=snakemake.input.trials,
    grid=snakemake.params.grid,
    summary_path=snakemake.output.summary,
    selected_path=snakemake.output.selected,
)
