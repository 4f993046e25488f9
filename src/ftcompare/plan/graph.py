"""The job graph's tables: what the Snakefile's rules ask of the plan, computed here as
plain functions of the checked config so that they are tested without Snakemake.

`StudyPlan.from_config(config)` checks the config once (ftcompare.plan.checks) and answers
every rule: which hub sources to fetch, the data and tokenized caches, each cell's inputs,
tuning's trials, the figures and where the HTML report shows them, each job's settings
(its params: a change to them reruns that job alone) and its time limit. The rules
(workflow/rules/*.smk) read these; workflow/rules/common.smk only hands them wildcards.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from ftcompare.contract import (
    ACROSS_FIGURE_CAPTIONS,
    RUN,
    TRIAL,
    atomic_write_bytes,
    figure_names,
    figure_place,
    is_hub_id,
    layout,
    outputs,
)
from ftcompare.data import SPLITS, settings_used
from ftcompare.methods import BLOCKS
from ftcompare.plan import tuning
from ftcompare.plan.checks import checked_study
from ftcompare.plan.config import resolve_run
from ftcompare.plan.cost import StudyCosts
from ftcompare.plan.matrix import Cell, hub_data_settings
from ftcompare.plan.preflight import cell_cache_keys

# Format 0 wrote these blocks into every run's settings, null where unused (the others
# only where used). Snakemake reruns a job whose params change, compared in order, so the
# fine-tune jobs' params keep this form (`run_params`): finished studies do not retrain.
FORMAT_0_BLOCKS = ("lora", "ia3", "quantization")


def run_params(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A run's settings (RunSpec.to_dict()) in the form the job graph compares (see FORMAT_0_BLOCKS)."""
    plain = {key: value for key, value in settings.items() if key not in BLOCKS}
    first = {block: settings.get(block) for block in FORMAT_0_BLOCKS}
    later = {key: value for key, value in settings.items() if key in BLOCKS and key not in FORMAT_0_BLOCKS}
    return {**plain, **first, **later}


def fetched_model(cfg: Mapping[str, Any]) -> str | None:
    """The fetched copy of a cell's hub model (an input); None for a local model."""
    name_or_path = cfg["model"]["name_or_path"]
    return str(layout.fetched_model_folder("results", name_or_path)) if is_hub_id(name_or_path) else None


def fetched_data(data: Mapping[str, Any]) -> str | None:
    """The fetched copy of a task's hub dataset (a folder of Parquet files); None for local files."""
    if data["source"] != "hub":
        return None
    return f"results/sources/data/{layout.hub_folder(data['name'], hub_data_settings(data))}"


def alternatives(values: Iterable[str]) -> str:
    """A wildcard constraint matching exactly `values` (none: a pattern that matches nothing)."""
    return "|".join(re.escape(value) for value in values) or "(?!)"


@dataclasses.dataclass(frozen=True, eq=False)
class StudyPlan:
    """The study's job graph: `study`, its config validated and defaulted; `cells`, each
    cell's checked config (ftcompare.plan.checks.checked_study). Every table is computed
    once, when first asked. Methods take plain values (task, model, strategy, seed)."""

    study: dict[str, Any]
    cells: dict[Cell, dict[str, Any]]

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, sources: bool = False) -> StudyPlan:
        """Every key checked against workflow/schemas/config.schema.yaml, defaults filled in,
        and each cell (a task with a model: ftcompare.plan.matrix) checked as a config of its
        own. An unknown key, a wrong type or an unknown strategy raises ConfigError here,
        before any job runs; so does a setting PEFT would refuse or change, a method that
        cannot apply to a model and, with `sources`, bad input (paths, columns, encodings,
        labels, classes, row counts, a local model's limits and module names), which in a
        job would cost its start-up."""
        return cls(*checked_study(config, sources=sources))

    @property
    def seeds(self) -> list[int]:
        return self.study["seeds"]

    # ----------------------------------------------------------------- sources and caches

    @functools.cached_property
    def hub_models(self) -> dict[str, dict[str, Any]]:
        """Each hub model to fetch (fetch_model: jobs have no network), by its folder."""
        return {
            layout.hub_folder(cfg["model"]["name_or_path"]): cfg["model"]
            for cfg in self.cells.values()
            if is_hub_id(cfg["model"]["name_or_path"])
        }

    @functools.cached_property
    def hub_data(self) -> dict[str, dict[str, Any]]:
        """Each hub dataset to fetch (fetch_data), with its configuration and splits, by its folder."""
        return {
            layout.hub_folder(cfg["data"]["name"], settings): settings
            for cfg in self.cells.values()
            if cfg["data"]["source"] == "hub"
            for settings in [hub_data_settings(cfg["data"])]
        }

    @functools.cached_property
    def cache_keys(self) -> dict[Cell, tuple[str, str]]:
        """Each cell's data and tokenized cache keys. The caches live under a key of exactly
        the settings that produce them (ftcompare.contract.cache_key): cells whose settings
        agree share them, a failed or abandoned edit writes elsewhere, and restoring the
        config finds these outputs untouched, so nothing downstream reruns."""
        return {cell: cell_cache_keys(cfg) for cell, cfg in self.cells.items()}

    def data_key(self, task: str, model: str) -> str:
        return self.cache_keys[Cell(task, model)][0]

    def tokenized_key(self, task: str, model: str) -> str:
        return self.cache_keys[Cell(task, model)][1]

    @functools.cached_property
    def data(self) -> dict[str, dict[str, Any]]:
        """prepare_data's jobs: data key -> {"settings", "hub": its fetched copy or None}."""
        return {
            self.cache_keys[cell][0]: {"settings": settings_used(cfg["data"]), "hub": fetched_data(cfg["data"])}
            for cell, cfg in self.cells.items()
        }

    @functools.cached_property
    def tokenized(self) -> dict[str, dict[str, Any]]:
        """tokenize's jobs: tokenized key -> {"data", "model", "max_length", "data_key", "base_model"}."""
        return {
            tokenized_key: {
                "data": f"results/data/{data_key}",
                "model": cfg["model"]["name_or_path"],
                "max_length": cfg["training"]["max_length"],
                "data_key": data_key,
                "base_model": fetched_model(cfg),
            }
            for cell, cfg in self.cells.items()
            for data_key, tokenized_key in [self.cache_keys[cell]]
        }

    def tokenize_splits(self, tokenized_key: str) -> dict[str, str]:
        """A tokenize job's prepared splits."""
        return {split: f"{self.tokenized[tokenized_key]['data']}/{split}.parquet" for split in SPLITS}

    @functools.cached_property
    def _cell_inputs(self) -> dict[Cell, dict[str, str]]:
        # Looked up, not recomputed: a GLUE x encoders plan asks for thousands of jobs.
        return {
            cell: {
                "dataset": f"results/tokenized/{self.cache_keys[cell][1]}",
                **({"base_model": fetched_model(cfg)} if fetched_model(cfg) else {}),
            }
            for cell, cfg in self.cells.items()
        }

    def cell_inputs(self, task: str, model: str) -> dict[str, str]:
        """What every GPU job of a cell reads: its tokenized data, and a hub model's fetched copy."""
        return self._cell_inputs[Cell(task, model)]

    def evaluate_inputs(self, task: str, model: str) -> dict[str, str]:
        """An evaluation's cell inputs, and for the model card the data summary."""
        return {
            **self.cell_inputs(task, model),
            "data_summary": f"results/data/{self.data_key(task, model)}/summary.json",
        }

    def model_name_or_path(self, task: str, model: str) -> str:
        """The cell's model as the config names it."""
        return self.cells[Cell(task, model)]["model"]["name_or_path"]

    # ----------------------------------------------------------------- runs and trials

    def every_run(self, file: str) -> list[str]:
        """`file` of every run of the study, cell by cell."""
        return [
            f"{RUN}/{file}".format(task=cell.task, model=cell.model, strategy=strategy, seed=seed)
            for cell, cfg in self.cells.items()
            for strategy in cfg["strategies"]
            for seed in self.seeds
        ]

    @functools.cached_property
    def trials(self) -> dict[Cell, dict[tuple[str, str], tuning.Trial]]:
        """Each cell's trials of every tuned strategy, by (strategy, trial id); none when tuning is off."""
        return {
            cell: {(t.strategy, t.id): t for ts in tuning.trials(cfg).values() for t in ts}
            for cell, cfg in self.cells.items()
        }

    @functools.cached_property
    def tuned(self) -> dict[Cell, list[str]]:
        """Each cell's tuned strategies."""
        return {cell: sorted({strategy for strategy, _ in cell_trials}) for cell, cell_trials in self.trials.items()}

    @functools.cached_property
    def tuned_cells(self) -> list[Cell]:
        return [cell for cell in self.cells if self.tuned[cell]]

    def is_tuned(self, task: str, model: str, strategy: str) -> bool:
        """Whether the strategy's final runs in this cell wait for its selection (select_settings)."""
        return strategy in self.tuned[Cell(task, model)]

    @functools.cached_property
    def tuning_outputs(self) -> dict[str, list[str]]:
        """Every tuned cell's trial summary and selection: inputs of the report."""
        return {
            "summaries": [f"results/tuning/{cell.path}/summary.csv" for cell in self.tuned_cells],
            "selections": [f"results/tuning/{cell.path}/selected.yaml" for cell in self.tuned_cells],
        }

    def config_for(
        self, task: str, model: str, strategy: str, selected: Mapping[str, Mapping[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The config a cell's strategy's final runs use: for a tuned one, with the values its
        cell's selection chose (`selected`: ftcompare.contract.read_selection of selected.yaml)."""
        cell = Cell(task, model)
        if strategy not in self.tuned[cell]:
            return self.cells[cell]
        if selected is None:
            raise ValueError(f"strategy {strategy!r} of {cell.path} is tuned: its runs need its cell's selection")
        return tuning.apply_selection(self.cells[cell], selected)

    def run_settings(
        self,
        task: str,
        model: str,
        strategy: str,
        seed: int | str,
        selected: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """One final run's resolved settings (finetune's `run` param): a change to them reruns that run alone."""
        config = self.config_for(task, model, strategy, selected)
        return run_params(resolve_run(config, strategy=strategy, seed=int(seed)).to_dict())

    def trial_settings(self, task: str, model: str, strategy: str, trial: str, seed: int | str) -> dict[str, Any]:
        """One trial run's settings (tune's `run` param): its grid values, the trials' epochs."""
        cell = Cell(task, model)
        found = self.trials[cell][(strategy, trial)]
        return run_params(tuning.trial_spec(self.cells[cell], found, seed=int(seed)).to_dict())

    def cell_trial_records(self, task: str, model: str) -> list[str]:
        """The training records of a cell's trials: what its selection reads."""
        cell = Cell(task, model)
        return [
            f"{TRIAL}/train.json".format(task=task, model=model, strategy=strategy, trial=trial, seed=seed)
            for strategy, trial in self.trials[cell]
            for seed in self.cells[cell]["tuning"]["seeds"]
        ]

    def trial_values(self, task: str, model: str) -> dict[str, dict[str, Any]]:
        """A cell's grid (select_settings' `grid` param): "<strategy>/<trial id>" -> the trial's values."""
        return {f"{s}/{i}": t.values for (s, i), t in self.trials[Cell(task, model)].items()}

    def job_counts(self) -> dict[str, int]:
        """How many jobs of each rule the study has, none done yet (as `snakemake -n` counts
        them in a fresh folder); rules without a job left out."""
        counts = {
            "fetch_data": len(self.hub_data),
            "fetch_model": len(self.hub_models),
            "prepare_data": len(self.data),
            "tokenize": len(self.tokenized),
            "tune": sum(len(trials) * len(self.cells[cell]["tuning"]["seeds"]) for cell, trials in self.trials.items()),
            "select_settings": len(self.tuned_cells),
            "finetune": len(self.every_run("train.json")),
            "evaluate": len(self.every_run("eval.json")),
            "report": 1,
            "all": 1,
        }
        return {rule: count for rule, count in counts.items() if count}

    # ----------------------------------------------------------------- figures and the report

    @property
    def across(self) -> bool:
        """Several cells: the comparison across tasks (summary_across_tasks.csv, its figures) too."""
        return len(self.cells) > 1

    @functools.cached_property
    def figures(self) -> list[str]:
        """A study of one cell: its figures in results/figures/. Several cells: each cell's
        under results/figures/<task>/<model>/, and the figures across tasks beside them."""
        if not self.across:
            return [f"results/figures/{name}.png" for name in figure_names(tuning=bool(self.tuned_cells))]
        return [
            f"results/figures/{cell.path}/{name}.png"
            for cell in self.cells
            for name in figure_names(tuning=bool(self.tuned[cell]))
        ] + [f"results/figures/{name}.png" for name in ACROSS_FIGURE_CAPTIONS]

    @property
    def report_place(self) -> tuple[str, str]:
        """The HTML report (snakemake --report) groups its items by task, then model: the
        study's own items (tables, figures, report.md) beside the runs in a study of one
        cell, else under "study"."""
        if self.across:
            return outputs.STUDY_CATEGORY
        only = next(iter(self.cells))
        return only.task, only.model

    @functools.cached_property
    def figure_places(self) -> dict[str, dict[str, str]]:
        """Each figure's place in the HTML report, labelled with its task and model."""
        pairs = [(cell.task, cell.model) for cell in self.cells]
        return {figure: figure_place(figure, pairs) for figure in self.figures}

    # ----------------------------------------------------------------- the Snakefile's other asks

    @functools.cached_property
    def wildcard_constraints(self) -> dict[str, str]:
        """The rules' wildcards match only the study's names (and keys, seeds)."""
        return {
            "task": alternatives(self.study["tasks"]),
            "model": alternatives(self.study["models"]),
            "strategy": alternatives(dict.fromkeys(s for cfg in self.cells.values() for s in cfg["strategies"])),
            "seed": r"\d+",
            "trial": alternatives(dict.fromkeys(i for cell_trials in self.trials.values() for _, i in cell_trials)),
            "data_key": r"[0-9a-f]{12}",
            "tokenized_key": r"[0-9a-f]{12}",
            "hub": r"[^/]+",
        }

    @functools.cached_property
    def costs(self) -> StudyCosts:
        """Every GPU job's estimate (ftcompare.plan.cost), read from the study's results/."""
        return StudyCosts(self.cells, seeds=self.seeds, settings=self.study["cost"])

    def runtime_of(self, kind: str) -> Callable[..., int]:
        """A GPU rule's `runtime` (minutes): from its job's estimate, growing with each attempt."""
        return self.costs.runtime_of(kind)

    def group_of(self, kind: str) -> Callable[..., str | None]:
        """A GPU rule's `group`: short jobs run together on a cluster."""
        return self.costs.group_of(kind)


def write_plan(cells: Mapping[Any, Mapping[str, Any]], path: str | Path) -> None:
    """The study's runs and trials, cell by cell (each cell's checked config, keyed by its
    ftcompare.plan.matrix.Cell), for `ftcompare status` to list the ones not yet started
    (results/<ftcompare.contract.PLAN_FILE>); rewritten only when it changes."""
    plan: dict[str, Any] = {"runs": [], "trials": [], "metrics": {}}
    for cell, config in cells.items():
        where = {"task": cell.task, "model": cell.model}
        plan["metrics"][cell.task] = config["data"]["metric"]
        plan["runs"] += [
            {**where, "strategy": s, "seed": seed} for s in config["strategies"] for seed in config["seeds"]
        ]
        plan["trials"] += [
            {**where, "strategy": trial.strategy, "trial": trial.id, "seed": seed}
            for strategy_trials in tuning.trials(config).values()
            for trial in strategy_trials
            for seed in config["tuning"]["seeds"]
        ]
    data = json.dumps(plan, indent=1).encode()
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
