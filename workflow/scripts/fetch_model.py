import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare import jobs

# A local rule: it runs where Snakemake runs, which has the network the jobs may lack.
jobs.start_job(log_path=snakemake.log[0], network=True)

from ftcompare.fetch import fetch_model  # noqa: E402
from ftcompare.sources import ModelSourceError  # noqa: E402

with jobs.one_line_errors(ModelSourceError):
    fetch_model(snakemake.params.model, snakemake.output.model, model_type=snakemake.params.model_type)
