import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare import jobs

jobs.setup_logging(snakemake.log[0])
jobs.prepare_data(
    data_config=snakemake.params.data,
    out_paths={split: snakemake.output[split] for split in ("train", "validation", "test")},
    summary_path=snakemake.output.summary,
)
