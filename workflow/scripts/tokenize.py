import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare import jobs

# Before torch is imported: the log, no network, and for GPU rules a device of the job's own.
jobs.start_job(log_path=snakemake.log[0])
jobs.tokenize_job(
    split_paths={split: snakemake.input[split] for split in ("train", "validation", "test")},
    # The fetched copy of a hub model, or the configured local source.
    model_name_or_path=snakemake.input.get("base_model") or snakemake.params.model,
    max_length=snakemake.params.max_length,
    out_dir=snakemake.output.dataset,
)
