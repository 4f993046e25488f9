import _bootstrap  # noqa: F401  (makes ftcompare importable)

import sys

from ftcompare.contract import start_job

# Before torch is imported: the log, no network, and for GPU rules a device of the job's own.
start_job(log_path=snakemake.log[0], gpus=snakemake.resources.get("gpu", 0))

from ftcompare.methods import RunSpec  # noqa: E402
from ftcompare.train import progress  # noqa: E402
from ftcompare.train import finetune_job  # noqa: E402
from ftcompare.train import Preempted  # noqa: E402

try:
    finetune_job(
        spec=RunSpec.from_dict(snakemake.params.run),
        tokenized_dir=snakemake.input.dataset,
        model_dir=snakemake.output.get("model"),  # none for a tuning trial
        record_path=snakemake.output.record,
        checkpoint_dir=snakemake.params.checkpoints,
        attempt_path=snakemake.params.attempt,
        retry_marker=snakemake.params.retry_marker,
        trial=snakemake.params.get("trial"),
        base_model_dir=snakemake.input.get("base_model") or None,
        # Beside the outputs, so that they change nothing Snakemake reruns (README, "Watching a study").
        files=progress.job_files(
            attempt=snakemake.params.attempt, wildcards=dict(snakemake.wildcards.items()), config=snakemake.config
        ),
    )
except Preempted as stop:
    # Non-zero so that Snakemake (or SLURM's requeue) runs the job again; it resumes.
    print(f"{stop}; rerun to resume from the checkpoint", file=sys.stderr)
    sys.exit(143)
