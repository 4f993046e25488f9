import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare.contract import start_job

# A local rule: it runs where Snakemake runs, which has the network the jobs may lack.
start_job(log_path=snakemake.log[0], network=True)

from ftcompare.data import fetch_data_job  # noqa: E402

# params: the dataset, its configuration (null: none) and which hub split each of ours
# reads ({role: hub split}); a Parquet file per role in the output folder.
fetch_data_job(
    snakemake.params.name, out_dir=snakemake.output.data, config=snakemake.params.config, splits=snakemake.params.splits
)
