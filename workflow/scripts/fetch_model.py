import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare.contract import start_job

# A local rule: it runs where Snakemake runs, which has the network the jobs may lack.
start_job(log_path=snakemake.log[0], network=True)

from ftcompare.data import fetch_model_job  # noqa: E402

fetch_model_job(snakemake.params.model, out_dir=snakemake.output.model, model_type=snakemake.params.model_type)
