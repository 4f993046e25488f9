import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare.contract import start_job

# Before torch is imported: the log, no network, and for GPU rules a device of the job's own.
start_job(log_path=snakemake.log[0])
from ftcompare.data import fetched_splits, prepare_data_job  # noqa: E402

prepare_data_job(
    data_config=snakemake.params.data,
    out_paths={split: snakemake.output[split] for split in ("train", "validation", "test")},
    summary_path=snakemake.output.summary,
    # The fetched copy of a hub dataset (a Parquet file per split); none for local sources.
    hub_files=fetched_splits(snakemake.input.get("hub")),
)
