# Config validation and input functions shared by the rules.
import sys
from pathlib import Path

# The workflow's library lives in src/; make it importable without an install too
# (e.g. inside --use-conda environments).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from ftcompare.config import resolve_run, validate_config
from ftcompare.sources import is_hub_id
from ftcompare.workflow_support import preflight, retry_marker

# Every key checked against workflow/schemas/config.schema.yaml, defaults filled in.
# An unknown key, a wrong type or an unknown strategy stops here, before any job runs.
VALIDATED = validate_config(config)
# Paths, column names and a local model's limits, in milliseconds: bad input stops
# here rather than in a job, whose start would delete its previous outputs.
preflight(VALIDATED)
STRATEGIES = list(VALIDATED["strategies"])
SEEDS = VALIDATED["seeds"]

SPLITS = ["train", "validation", "test"]
FIGURES = expand(
    "results/figures/{name}.png",
    name=[
        "accuracy",
        "train_time",
        "trainable_params",
        "peak_memory",
        "pareto",
        "loss_curves",
    ],
)


# What the local fetch rules download before any job needs it (jobs have no network).
MODEL_FROM_HUB = is_hub_id(VALIDATED["model"]["name_or_path"])
DATA_FROM_HUB = VALIDATED["data"]["source"] == "hub"
FETCHED_MODEL = "results/sources/model"
FETCHED_DATA = {
    split: f"results/sources/data/{split}.parquet" for split in ["train", "test"]
}


def base_model(wildcards):
    """The fetched copy of a hub model, as an input; nothing for a local model."""
    return FETCHED_MODEL if MODEL_FROM_HUB else []


def hub_data(wildcards):
    """The fetched copies of a hub dataset's splits (unpack() them); nothing for local files."""
    return FETCHED_DATA if DATA_FROM_HUB else {}


wildcard_constraints:
    strategy="|".join(STRATEGIES),
    seed=r"\d+",


def data_settings(wildcards):
    """The data section: its change reruns the data stage and everything after it."""
    return VALIDATED["data"]


def run_settings(wildcards):
    """One run's resolved settings: a change to them reruns that run alone."""
    return resolve_run(
        VALIDATED, strategy=wildcards.strategy, seed=int(wildcards.seed)
    ).to_dict()


def minutes(first_attempt):
    """A `runtime` (minutes) that grows with each attempt: a job that ran out of time is
    retried with more (a fine-tune resumes from its checkpoint, so it even needs less).
    """
    return lambda wildcards, attempt: first_attempt * attempt


# Attempt files: beside a job's outputs, not among them, so that Snakemake never
# deletes them; each job writes one and its retry marker reads it back.
FINETUNE_ATTEMPT = "results/runs/{strategy}/seed{seed}/attempt.json"
EVALUATE_ATTEMPT = "results/runs/{strategy}/seed{seed}/eval-attempt.json"


def finetune_retry_marker(wildcards):
    """Makes a plain rerun retry a skipped or failed run (see ftcompare.workflow_support)."""
    return retry_marker(FINETUNE_ATTEMPT.format(**wildcards))


def evaluate_retry_marker(wildcards):
    """The same for a failed evaluation (e.g. out of memory at eval_batch_size)."""
    return retry_marker(EVALUATE_ATTEMPT.format(**wildcards))


def all_train_records(wildcards):
    return expand(
        "results/runs/{strategy}/seed{seed}/train.json", strategy=STRATEGIES, seed=SEEDS
    )


def all_eval_records(wildcards):
    return expand(
        "results/runs/{strategy}/seed{seed}/eval.json", strategy=STRATEGIES, seed=SEEDS
    )
