import _bootstrap  # noqa: F401  (makes ftcompare importable)

from ftcompare import jobs

# A local rule: it runs where Snakemake runs, which has the network the jobs may lack.
jobs.start_job(log_path=snakemake.log[0], network=True)

from ftcompare.fetch import fetch_dataset  # noqa: E402

# params: name, config (null: none) and splits ({role: hub split}); one output per role.
# A rule without the last two fetches train and test, as before they existed.
splits = snakemake.params.get("splits") or {"train": "train", "test": "test"}
fetch_dataset(
    snakemake.params.name,
    {role: snakemake.output[role] for role in splits},
    config=snakemake.params.get("config"),
    splits=splits,
)
