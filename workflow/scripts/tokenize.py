import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare.contract import start_job

# Before torch is imported: the log, no network, and for GPU rules a device of the job's own.
start_job(log_path=snakemake.log[0])
from ftcompare.data import tokenize_job  # noqa: E402

tokenize_job(
    split_paths={split: snakemake.input[split] for split in ("train", "validation", "test")},
    # The fetched copy of a hub model, or the configured local source.
    model_name_or_path=snakemake.input.get("base_model") or snakemake.params.model,
    max_length=snakemake.params.max_length,
    out_dir=snakemake.output.dataset,
)
