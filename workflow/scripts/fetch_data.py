import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare import jobs

# A local rule: it runs where Snakemake runs, which has the network the jobs may lack.
jobs.start_job(log_path=snakemake.log[0], network=True)

from ftcompare.fetch import fetch_dataset  # noqa: E402

fetch_dataset(
    snakemake.params.name,
    {split: f"{snakemake.output.data}/{split}.parquet" for split in snakemake.params.splits},
    config=snakemake.params.config,
    splits=snakemake.params.splits,
)
