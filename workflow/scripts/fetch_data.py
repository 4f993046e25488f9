import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare import jobs

# A local rule: it runs where Snakemake runs, which has the network the jobs may lack.
jobs.start_job(log_path=snakemake.log[0], network=True)

from ftcompare.data import DataError  # noqa: E402
from ftcompare.fetch import fetch_dataset  # noqa: E402

# params: the dataset, its configuration (null: none) and which hub split each of ours
# reads ({role: hub split}); a Parquet file per role in the output folder.
with jobs.one_line_errors(DataError):
    fetch_dataset(
        snakemake.params.name,
        {role: f"{snakemake.output.data}/{role}.parquet" for role in snakemake.params.splits},
        config=snakemake.params.config,
        splits=snakemake.params.splits,
    )
