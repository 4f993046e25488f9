import _bootstrap  # noqa: F401  (makes ftcompare importable)

import sys

from ftcompare import jobs
from ftcompare.config import RunSpec
from ftcompare.training import Preempted

jobs.setup_logging(snakemake.log[0])
try:
    jobs.finetune(
        spec=RunSpec.from_dict(snakemake.params.run),
        tokenized_dir=snakemake.input.dataset,
        model_dir=snakemake.output.get("model"),  # none for a tuning trial
        record_path=snakemake.output.record,
        checkpoint_dir=snakemake.params.checkpoints,
        attempt_path=snakemake.params.attempt,
        retry_marker=snakemake.params.retry_marker,
        trial=snakemake.params.get("trial"),
    )
except Preempted as stop:
    # Non-zero so that Snakemake (or SLURM's requeue) runs the job again; it resumes.
    print(f"{stop}; rerun to resume from the checkpoint", file=sys.stderr)
    sys.exit(143)
