# Config validation and input functions shared by the rules.
import sys
from pathlib import Path

# The workflow's library lives in src/; make it importable without an install too
# (e.g. inside --use-conda environments).
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

import re

from ftcompare.plan.checks import checked_study
from ftcompare.plan.config import REFERENCE_RECIPE, resolve_run
from ftcompare.data.splits import settings_used
from ftcompare.contract.outputs import ACROSS_FIGURE_CAPTIONS, ACROSS_TABLE, STUDY_CATEGORY, figure_names, figure_place
from ftcompare.contract.records import read_selection, retry_marker
from ftcompare.plan.graph import run_params
from ftcompare.contract.sources import is_hub_id
from ftcompare.use.status import write_plan
from ftcompare.contract.layout import TUNING_SUMMARY, fetched_model_folder, hub_folder
from ftcompare.plan.matrix import Cell, hub_data_settings
from ftcompare.plan.tuning import apply_selection, trial_spec, trials
from ftcompare.plan.preflight import cell_cache_keys
from ftcompare.plan.cost import StudyCosts, minutes

# Every key checked against workflow/schemas/config.schema.yaml, defaults filled in, and
# each cell of the study (a task with a model: ftcompare.plan.matrix) checked as a config of its
# own. An unknown key, a wrong type or an unknown strategy stops here, before any job
# runs; so does a setting PEFT would refuse or change, a method that cannot apply to a
# model, and bad input (paths, columns, encodings, labels, classes, row counts, a local
# model's limits and module names), which in a job would cost its start-up: ftcompare.plan.checks.
STUDY, CELLS = checked_study(config, sources=True)
SEEDS = STUDY["seeds"]


def cell_of(wildcards):
    return Cell(wildcards.task, wildcards.model)


# Hub sources, fetched by the local fetch rules before any job needs them (jobs have no
# network); a folder per hub model and per hub dataset (with its configuration and splits).
HUB_MODELS = {
    hub_folder(cfg["model"]["name_or_path"]): cfg["model"]
    for cfg in CELLS.values()
    if is_hub_id(cfg["model"]["name_or_path"])
}
HUB_DATA = {
    hub_folder(cfg["data"]["name"], settings): settings
    for cfg in CELLS.values()
    if cfg["data"]["source"] == "hub"
    for settings in [hub_data_settings(cfg["data"])]
}


def fetched_model(cfg):
    """The fetched copy of a cell's hub model (an input); None for a local model."""
    name_or_path = cfg["model"]["name_or_path"]
    return (
        str(fetched_model_folder("results", name_or_path))
        if is_hub_id(name_or_path)
        else None
    )


def fetched_data(data):
    """The fetched copy of a task's hub dataset (a folder of Parquet files); None for local files."""
    if data["source"] != "hub":
        return None
    return f"results/sources/data/{hub_folder(data['name'], hub_data_settings(data))}"


# The data and tokenized caches live under a key of exactly the settings that produce
# them (see cache_key): tasks and models whose settings agree share them, a failed or
# abandoned edit writes elsewhere, and restoring the config finds these outputs untouched,
# so nothing downstream reruns.
DATA = {}  # data key -> {"settings", "hub"}
TOKENIZED = {}  # tokenized key -> {"data_key", "model", "max_length", "base_model"}
DATA_KEY = {}  # cell -> its data key
TOKENIZED_KEY = {}  # cell -> its tokenized key
for cell, cfg in CELLS.items():
    data_key, tokenized_key = cell_cache_keys(cfg)
    DATA[data_key] = {
        "settings": settings_used(cfg["data"]),
        "hub": fetched_data(cfg["data"]),
    }
    TOKENIZED[tokenized_key] = {
        "data": f"results/data/{data_key}",
        "model": cfg["model"]["name_or_path"],
        "max_length": cfg["training"]["max_length"],
        "data_key": data_key,
        "base_model": fetched_model(cfg),
    }
    DATA_KEY[cell], TOKENIZED_KEY[cell] = data_key, tokenized_key


# What every GPU job of a cell reads: its tokenized data, and a hub model's fetched copy.
# One input function per job, looked up, not recomputed: a GLUE x encoders plan evaluates
# it for thousands of jobs.
CELL_INPUTS = {
    cell: {
        "dataset": f"results/tokenized/{TOKENIZED_KEY[cell]}",
        **({"base_model": fetched_model(cfg)} if fetched_model(cfg) else {}),
    }
    for cell, cfg in CELLS.items()
}


def cell_inputs(wildcards):
    """A cell's tokenized data and fetched model (unpack() them)."""
    return CELL_INPUTS[cell_of(wildcards)]


# Tuning (ftcompare.plan.tuning): each cell's trials of every tuned strategy; none when it is off.
TRIALS = {
    cell: {(t.strategy, t.id): t for ts in trials(cfg).values() for t in ts}
    for cell, cfg in CELLS.items()
}
TUNED = {
    cell: sorted({strategy for strategy, _ in cell_trials})
    for cell, cell_trials in TRIALS.items()
}
TUNED_CELLS = [cell for cell in CELLS if TUNED[cell]]
TUNING_OUTPUTS = {
    "summaries": [f"results/tuning/{cell.path}/summary.csv" for cell in TUNED_CELLS],
    "selections": [f"results/tuning/{cell.path}/selected.yaml" for cell in TUNED_CELLS],
}
# A study of one cell has today's report: its figures in results/figures/. Several cells:
# each cell's under results/figures/<task>/<model>/, and the comparison across tasks
# (summary_across_tasks.csv, its heatmap and rank figures) beside them.
ACROSS = len(CELLS) > 1
if ACROSS:
    FIGURES = [
        f"results/figures/{cell.path}/{name}.png"
        for cell in CELLS
        for name in figure_names(tuning=bool(TUNED[cell]))
    ] + [f"results/figures/{name}.png" for name in ACROSS_FIGURE_CAPTIONS]
else:
    FIGURES = expand(
        "results/figures/{name}.png", name=figure_names(tuning=bool(TUNED_CELLS))
    )


# The HTML report (snakemake --report) groups its items by task, then model: the study's
# own items (tables, figures, report.md) beside the runs in a study of one cell, else
# under "study".
REPORT_CATEGORY, REPORT_SUBCATEGORY = (
    (next(iter(CELLS)).task, next(iter(CELLS)).model)
    if len(CELLS) == 1
    else STUDY_CATEGORY
)
# Each figure beside its cell's runs, labelled with its task and model.
CELL_PAIRS = [(cell.task, cell.model) for cell in CELLS]
FIGURE_PLACES = {figure: figure_place(figure, CELL_PAIRS) for figure in FIGURES}


# Every planned run and trial, for `ftcompare status` to show those not started yet
# (written when the study runs, not on a dry run; nothing depends on it).
onstart:
    write_plan(CELLS, "results/plan.json")


def names(values):
    return "|".join(re.escape(value) for value in values) or "(?!)"


wildcard_constraints:
    task=names(STUDY["tasks"]),
    model=names(STUDY["models"]),
    strategy=names({s for cfg in CELLS.values() for s in cfg["strategies"]}),
    seed=r"\d+",
    trial=names({i for cell_trials in TRIALS.values() for _, i in cell_trials}),
    data_key=r"[0-9a-f]{12}",
    tokenized_key=r"[0-9a-f]{12}",
    hub=r"[^/]+",


def config_for(wildcards):
    """The config a cell's strategy's final runs use: for a tuned one, with its chosen
    values (the selection has run by then: see run_inputs)."""
    cell = cell_of(wildcards)
    if wildcards.strategy not in TUNED[cell]:
        return CELLS[cell]
    selected = checkpoints.select_settings.get(
        task=cell.task, model=cell.model
    ).output.selected
    return apply_selection(CELLS[cell], read_selection(selected))


def run_inputs(wildcards):
    """A final run's cell inputs (unpack() them). The final runs of a tuned strategy wait
    for their cell's selection, a checkpoint, without taking its file as an input: a new
    trial that does not win retrains none of them."""
    cell = cell_of(wildcards)
    if wildcards.strategy in TUNED[cell]:
        checkpoints.select_settings.get(task=cell.task, model=cell.model)
    return CELL_INPUTS[cell]


def evaluate_inputs(wildcards):
    """A run's cell inputs, and for the model card the data summary (unpack() them)."""
    cell = cell_of(wildcards)
    return {
        **CELL_INPUTS[cell],
        "data_summary": f"results/data/{DATA_KEY[cell]}/summary.json",
    }


def run_settings(wildcards):
    """One run's resolved settings: a change to them reruns that run alone."""
    spec = resolve_run(
        config_for(wildcards), strategy=wildcards.strategy, seed=int(wildcards.seed)
    )
    return run_params(spec.to_dict())


def trial_settings(wildcards):
    """One trial run's settings: its grid values, the trials' epochs."""
    cell = cell_of(wildcards)
    trial = TRIALS[cell][(wildcards.strategy, wildcards.trial)]
    return run_params(
        trial_spec(CELLS[cell], trial, seed=int(wildcards.seed)).to_dict()
    )


def cell_trial_records(wildcards):
    cell = cell_of(wildcards)
    return [
        f"results/tuning/{cell.path}/trials/{strategy}/{trial}/seed{seed}/train.json"
        for strategy, trial in TRIALS[cell]
        for seed in CELLS[cell]["tuning"]["seeds"]
    ]


def trial_values(wildcards):
    cell = cell_of(wildcards)
    return {f"{s}/{i}": t.values for (s, i), t in TRIALS[cell].items()}


# Time limits (minutes), growing with each attempt; a GPU job's from its estimate
# (ftcompare.plan.cost), re-evaluated when it is scheduled, and its group on a cluster.
COSTS = StudyCosts(CELLS, seeds=SEEDS, settings=STUDY["cost"])


# A run's folder; a trial's. Attempt files: beside a job's outputs, not among them, so
# that Snakemake never deletes them; each job writes one and its retry marker reads it back.
RUN = "results/runs/{task}/{model}/{strategy}/seed{seed}"
TRIAL = "results/tuning/{task}/{model}/trials/{strategy}/{trial}/seed{seed}"
FINETUNE_ATTEMPT = f"{RUN}/attempt.json"
EVALUATE_ATTEMPT = f"{RUN}/eval-attempt.json"
TRIAL_ATTEMPT = f"{TRIAL}/attempt.json"


def finetune_retry_marker(wildcards):
    """Makes a plain rerun retry a skipped or failed run (see ftcompare.plan.preflight)."""
    return retry_marker(FINETUNE_ATTEMPT.format(**wildcards))


def trial_retry_marker(wildcards):
    """The same for a failed trial."""
    return retry_marker(TRIAL_ATTEMPT.format(**wildcards))


def evaluate_retry_marker(wildcards):
    """The same for a failed evaluation (e.g. out of memory at eval_batch_size)."""
    return retry_marker(EVALUATE_ATTEMPT.format(**wildcards))


def every_run(file):
    """`file` of every run of the study, cell by cell."""
    return [
        f"{RUN}/{file}".format(
            task=cell.task, model=cell.model, strategy=strategy, seed=seed
        )
        for cell, cfg in CELLS.items()
        for strategy in cfg["strategies"]
        for seed in SEEDS
    ]


def all_train_records(wildcards):
    return every_run("train.json")


def all_eval_records(wildcards):
    return every_run("eval.json")


def all_predictions(wildcards):
    return every_run("predictions.parquet")
