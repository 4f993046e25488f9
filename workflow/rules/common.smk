# Config validation and input functions shared by the rules.
import sys
from pathlib import Path

# The workflow's library lives in src/; make it importable without an install too
# (e.g. inside --use-conda environments).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

import re

from ftcompare.checks import checked_config
from ftcompare.config import REFERENCE_RECIPE, resolve_run
from ftcompare.figures import figure_names
from ftcompare.data import settings_used
from ftcompare.records import read_selection, retry_marker, run_params
from ftcompare.sources import is_hub_id
from ftcompare.status import task_label, write_plan
from ftcompare.tuning import apply_selection, trial_spec, trials
from ftcompare.workflow_support import cache_key

# Every key checked against workflow/schemas/config.schema.yaml, defaults filled in.
# An unknown key, a wrong type or an unknown strategy stops here, before any job runs;
# so does a setting PEFT would refuse or change, and bad input (paths, columns, encodings,
# labels, classes, row counts, a local model's limits and module names), which in a job
# would cost its start-up: ftcompare.checks.
VALIDATED = checked_config(config, sources=True)
STRATEGIES = list(VALIDATED["strategies"])
SEEDS = VALIDATED["seeds"]

# The data and tokenized caches live under a key of exactly the settings that produce
# them (see cache_key): a failed or abandoned edit writes elsewhere, and restoring the
# config finds these outputs untouched, so nothing downstream reruns. Finished runs of
# another config are not kept (results/runs/ holds one study).
DATA_SETTINGS = settings_used(VALIDATED["data"])
DATA_KEY = cache_key(DATA_SETTINGS)
DATA_DIR = f"results/data/{DATA_KEY}"
TOKENIZE_SETTINGS = {
    "data": DATA_DIR,
    "model": VALIDATED["model"]["name_or_path"],
    "max_length": VALIDATED["training"]["max_length"],
}
TOKENIZED_KEY = cache_key(TOKENIZE_SETTINGS)
TOKENIZED_DIR = f"results/tokenized/{TOKENIZED_KEY}"


# Tuning (ftcompare.tuning): the trials of every tuned strategy; none when it is off.
TRIALS = {(t.strategy, t.id): t for ts in trials(VALIDATED).values() for t in ts}
TRIAL_VALUES = {f"{s}/{i}": t.values for (s, i), t in TRIALS.items()}
TUNED = sorted({strategy for strategy, _ in TRIALS})
TUNING_OUTPUTS = (
    ["results/tuning/summary.csv", "results/tuning/selected.yaml"] if TUNED else []
)
FIGURES = expand("results/figures/{name}.png", name=figure_names(tuning=bool(TUNED)))


# The HTML report (snakemake --report) groups its items by task, then model, then strategy.
REPORT_TASK = task_label(VALIDATED["data"])
REPORT_MODEL = VALIDATED["model"]["name_or_path"]


# Every planned run and trial, for `ftcompare status` to show those not started yet
# (written when the study runs, not on a dry run; nothing depends on it).
onstart:
    write_plan(VALIDATED, "results/plan.json")


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
    trial="|".join(re.escape(i) for _, i in TRIALS) or "(?!)",


def config_for(strategy):
    """The config a strategy's final runs use: for a tuned one, with its chosen values
    (the selection has run by then: see after_selection)."""
    if strategy not in TUNED:
        return VALIDATED
    selected = checkpoints.select_settings.get().output.selected
    return apply_selection(VALIDATED, read_selection(selected))


def after_selection(wildcards):
    """The final runs of a tuned strategy wait for the selection, a checkpoint, without
    taking its file as an input: a new trial that does not win retrains none of them."""
    if wildcards.strategy in TUNED:
        checkpoints.select_settings.get()
    return []


def run_settings(wildcards):
    """One run's resolved settings: a change to them reruns that run alone."""
    spec = resolve_run(
        config_for(wildcards.strategy),
        strategy=wildcards.strategy,
        seed=int(wildcards.seed),
    )
    return run_params(spec.to_dict())


def trial_settings(wildcards):
    """One trial run's settings: its grid values, the trials' epochs."""
    trial = TRIALS[(wildcards.strategy, wildcards.trial)]
    return run_params(trial_spec(VALIDATED, trial, seed=int(wildcards.seed)).to_dict())


def all_trial_records(wildcards):
    return [
        f"results/tuning/trials/{strategy}/{trial}/seed{seed}/train.json"
        for strategy, trial in TRIALS
        for seed in VALIDATED["tuning"]["seeds"]
    ]


def minutes(first_attempt):
    """A `runtime` (minutes) that grows with each attempt: a job that ran out of time is
    retried with more (a fine-tune resumes from its checkpoint, so it even needs less).
    """
    return lambda wildcards, attempt: first_attempt * attempt


# Attempt files: beside a job's outputs, not among them, so that Snakemake never
# deletes them; each job writes one and its retry marker reads it back.
FINETUNE_ATTEMPT = "results/runs/{strategy}/seed{seed}/attempt.json"
EVALUATE_ATTEMPT = "results/runs/{strategy}/seed{seed}/eval-attempt.json"
TRIAL_ATTEMPT = "results/tuning/trials/{strategy}/{trial}/seed{seed}/attempt.json"


def finetune_retry_marker(wildcards):
    """Makes a plain rerun retry a skipped or failed run (see ftcompare.workflow_support)."""
    return retry_marker(FINETUNE_ATTEMPT.format(**wildcards))


def trial_retry_marker(wildcards):
    """The same for a failed trial."""
    return retry_marker(TRIAL_ATTEMPT.format(**wildcards))


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


def all_predictions(wildcards):
    return expand(
        "results/runs/{strategy}/seed{seed}/predictions.parquet",
        strategy=STRATEGIES,
        seed=SEEDS,
    )
