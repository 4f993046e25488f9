import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare import jobs

jobs.setup_logging(snakemake.log[0])
jobs.tokenize(
    split_paths={split: snakemake.input[split] for split in ("train", "validation", "test")},
    model_name_or_path=snakemake.params.model,
    max_length=snakemake.params.max_length,
    out_dir=snakemake.output.dataset,
)
