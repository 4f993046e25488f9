import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare.contract import start_job

start_job(log_path=snakemake.log[0])
from ftcompare.plan import select_settings_job  # noqa: E402

select_settings_job(
    trial_records=snakemake.input.trials,
    grid=snakemake.params.grid,
    summary_path=snakemake.output.summary,
    selected_path=snakemake.output.selected,
)
