import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare import jobs

# Before torch is imported: the log, no network, and for GPU rules a device of the job's own.
jobs.start_job(log_path=snakemake.log[0])
jobs.prepare_data_job(
    data_config=snakemake.params.data,
    out_paths={split: snakemake.output[split] for split in ("train", "validation", "test")},
    summary_path=snakemake.output.summary,
    # The fetched copy of a hub dataset (a Parquet file per split); none for local sources.
    hub_files=jobs.fetched_splits(snakemake.input.get("hub")),
)
