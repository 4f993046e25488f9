# The Snakemake glue over the study's plan (ftcompare.plan.graph.StudyPlan, which computes
# and tests every table the rules read): input functions that hand a job's wildcards to
# the plan, and the lookups of tuning's checkpoint, which only Snakemake can make.
import sys
from pathlib import Path

# The workflow's library lives in src/; make it importable without an install too
# (e.g. inside --use-conda environments).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from ftcompare.contract import (
    ACROSS_TABLE,
    EVALUATE_ATTEMPT,
    FINETUNE_ATTEMPT,
    PLAN_FILE,
    RUN,
    TRIAL,
    TRIAL_ATTEMPT,
    TUNING_SUMMARY,
    read_selection,
    retry_marker,
)
from ftcompare.plan import REFERENCE_RECIPE, StudyPlan, minutes, write_plan

# The config checked once, before any job runs: every key against the schema, each cell
# (a task with a model) as a config of its own, the data and a local model read
# (ftcompare.plan.checks). A bad config stops here with a ConfigError naming the value.
PLAN = StudyPlan.from_config(config, sources=True)


# Every planned run and trial, for `ftcompare status` to show those not started yet
# (written when the study runs, not on a dry run; nothing depends on it).
onstart:
    write_plan(PLAN.cells, f"results/{PLAN_FILE}")


wildcard_constraints:
    **PLAN.wildcard_constraints,


def cell_inputs(wildcards):
    """A cell's tokenized data and fetched model (unpack() them)."""
    return PLAN.cell_inputs(wildcards.task, wildcards.model)


def evaluate_inputs(wildcards):
    """A run's cell inputs, and for the model card the data summary (unpack() them)."""
    return PLAN.evaluate_inputs(wildcards.task, wildcards.model)


def selection_job(wildcards):
    """A tuned strategy's cell's selection, a checkpoint (Snakemake plans the final runs
    once it has run); None for an untuned strategy."""
    if PLAN.is_tuned(wildcards.task, wildcards.model, wildcards.strategy):
        return checkpoints.select_settings.get(
            task=wildcards.task, model=wildcards.model
        )


def run_inputs(wildcards):
    """A final run's cell inputs (unpack() them). The final runs of a tuned strategy wait
    for their cell's selection without taking its file as an input: a new trial that does
    not win retrains none of them."""
    selection_job(wildcards)
    return PLAN.cell_inputs(wildcards.task, wildcards.model)


def run_settings(wildcards):
    """One run's resolved settings, a tuned strategy's with its chosen values."""
    job = selection_job(wildcards)
    selected = read_selection(job.output.selected) if job else None
    return PLAN.run_settings(
        wildcards.task, wildcards.model, wildcards.strategy, wildcards.seed, selected
    )


def trial_settings(wildcards):
    return PLAN.trial_settings(
        wildcards.task,
        wildcards.model,
        wildcards.strategy,
        wildcards.trial,
        wildcards.seed,
    )


def cell_trial_records(wildcards):
    return PLAN.cell_trial_records(wildcards.task, wildcards.model)


def trial_values(wildcards):
    return PLAN.trial_values(wildcards.task, wildcards.model)


def retry_marker_of(attempt):
    """A job's `retry_marker` param, read from its attempt file: a plain rerun retries a
    skipped or failed job (see ftcompare.plan.preflight)."""
    return lambda wildcards: retry_marker(attempt.format(**wildcards))
