"""Tests for ftcompare.plan.tuning: the grid as config, the trials, and the selection."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
from specs import CPU, make_spec

from ftcompare.contract import ConfigError
from ftcompare.data import batching
from ftcompare.plan import (
    Trial,
    TrialResult,
    apply_selection,
    checked_config,
    load_config,
    resolve_run,
    select,
    trial_result,
    trial_spec,
    trials,
)
from ftcompare.train import loop as training

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def config_with(grid: dict[str, Any], **tuning: Any) -> dict[str, Any]:
    config = load_config()
    config["tuning"] = {"enabled": True, "seeds": [0], "epochs": 1, "grid": grid, **tuning}
    return config


def result(
    strategy: str,
    trial: str,
    accuracy: float | None,
    *,
    seed: int = 0,
    status: str = "ok",
    params: float = 1000,
    seconds: float = 10.0,
    values: dict | None = None,
    metric: str = "accuracy",
    score: float | None = None,
) -> TrialResult:
    """A trial run scored `accuracy`, and `score` on `metric` (where it is not accuracy)."""
    return TrialResult(
        strategy=strategy,
        trial=trial,
        values=values or {"learning_rate": float(trial)},
        seed=seed,
        status=status,
        metric=metric,
        val_score=accuracy if metric == "accuracy" else score,
        val_accuracy=accuracy,
        val_loss=None,
        train_time_s=seconds,
        trainable_params=params,
    )


# --- the grid --------------------------------------------------------------------------


def test_every_combination_is_a_trial_named_by_its_values():
    config = checked_config(config_with({"lora": {"learning_rate": [1.0e-4, 1.0e-3], "lora.r": [4, 16]}, "full": None}))
    found = trials(config)
    assert list(found) == ["lora"]  # `full: null` leaves it untuned
    assert [t.id for t in found["lora"]] == [
        "learning_rate=0.0001,lora.r=4",
        "learning_rate=0.0001,lora.r=16",
        "learning_rate=0.001,lora.r=4",
        "learning_rate=0.001,lora.r=16",
    ]
    spec = trial_spec(config, found["lora"][3], seed=5)
    assert (spec.learning_rate, spec.block("lora")["r"], spec.block("lora")["alpha"], spec.epochs, spec.seed) == (
        1.0e-3,
        16,
        16,
        1,
        5,
    )
    # The config itself is untouched: the final runs start from it.
    assert resolve_run(config, strategy="lora", seed=0).block("lora")["r"] == 8


def test_tuning_off_has_no_trials_and_the_configs_own_grid_is_valid():
    assert trials(checked_config(config_with({"lora": {"learning_rate": [1.0e-3]}}, enabled=False))) == {}
    found = trials(checked_config(load_config()))
    assert set(found) == {"full", "lora", "qlora", "ia3"} and all(len(t) == 5 for t in found.values())


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"lora_r16": {"learning_rate": [1.0e-3]}}, "tuning.grid.lora_r16: no such strategy"),
        ({"full": {"lora.r": [4]}}, "tuning.grid.full.lora.r: strategy 'full' (method 'full') cannot take it"),
        ({"lora": {"rate": [1.0e-3]}}, "tuning.grid.lora.rate: strategy 'lora' (method 'lora') cannot take it"),
        ({"lora": {"learning_rate": [-1.0]}}, "trial learning_rate=-1: invalid config"),
        ({"lora": {"lora.r": ["big"]}}, "trial lora.r=big: invalid config"),
        ({}, "tuning.grid is empty"),
    ],
)
def test_a_grid_the_strategies_cannot_take_is_a_config_error(grid, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        checked_config(config_with(grid))


def methods_config_with(grid: dict[str, Any]) -> dict[str, Any]:
    """config/methods.yaml's study (every named method) tuning `grid` alone."""
    config = load_config(CONFIG_DIR / "methods.yaml")
    config["tuning"] = {"enabled": True, "seeds": [0], "epochs": 1, "grid": grid}
    return config


def test_the_new_methods_settings_are_tunable_as_dotted_keys():
    grid = {
        "dora": {"lora.r": [4, 8]},
        "adalora": {"adalora.target_r": [4, 8], "adalora.init_r": [12]},
        "vera": {"vera.r": [128, 256]},
        "loha": {"loha.alpha": [8, 16]},
        "lokr": {"lokr.r": [4]},
        "oft": {"oft.block_size": [16, 32]},
        "ln_tuning": {"learning_rate": [1.0e-3]},
        "prompt_tuning": {"prompt_tuning.num_virtual_tokens": [10, 20]},
        "prefix_tuning": {"prefix_tuning.projection": [False, True]},
        "p_tuning": {"p_tuning.encoder": ["mlp", "lstm"]},
    }
    config = checked_config(methods_config_with(grid))
    found = trials(config)
    assert set(found) == set(grid)
    assert [t.id for t in found["vera"]] == ["vera.r=128", "vera.r=256"]
    spec = trial_spec(config, found["adalora"][0], seed=0)
    assert (spec.block("adalora")["target_r"], spec.block("adalora")["init_r"], spec.block("adalora")["alpha"]) == (
        4,
        12,
        16,
    )
    spec = trial_spec(config, found["dora"][0], seed=0)
    assert (spec.block("lora")["r"], spec.block("lora")["use_dora"]) == (4, True)  # DoRA stays DoRA
    assert trial_spec(config, found["prompt_tuning"][0], seed=0).block("prompt_tuning")["num_virtual_tokens"] == 10


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"vera": {"lora.r": [4]}}, "tuning.grid.vera.lora.r: strategy 'vera' (method 'vera') cannot take it"),
        ({"bitfit": {"bitfit.r": [4]}}, "tuning.grid.bitfit.bitfit.r: strategy 'bitfit' (method 'bitfit') cannot"),
        ({"oft": {"oft.rank": [4]}}, "tuning.grid.oft.oft.rank: strategy 'oft' (method 'oft') cannot take it"),
        ({"dora": {"lora.use_dora": [False]}}, "method 'dora' is lora with use_dora: True"),
        ({"vera": {"vera.r": [0]}}, "trial vera.r=0: invalid config"),
        ({"p_tuning": {"p_tuning.encoder": ["gru"]}}, "trial p_tuning.encoder=gru"),
    ],
)
def test_a_new_methods_grid_it_cannot_take_is_a_config_error(grid, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        checked_config(methods_config_with(grid))


# --- the selection ---------------------------------------------------------------------


def test_the_best_mean_validation_accuracy_is_chosen():
    chosen = select(
        [
            result("lora", "0.001", 0.80, seed=0),
            result("lora", "0.001", 0.90, seed=1),  # mean 0.85
            result("lora", "0.002", 0.88, seed=0),
            result("lora", "0.002", 0.84, seed=1),  # mean 0.86
            result("ia3", "0.01", 0.70),
        ]
    )
    assert chosen["lora"] == {
        "values": {"learning_rate": 0.002},
        "metric": "accuracy",
        "val_score": pytest.approx(0.86),
        "val_accuracy": pytest.approx(0.86),
        "trial": "0.002",
    }
    assert chosen["ia3"]["trial"] == "0.01"


def test_the_tasks_metric_chooses_not_accuracy():
    # 0.001 has the better mean accuracy (0.85 vs 0.83), 0.002 the better macro-F1 (0.80 vs 0.70).
    runs = [
        result("lora", "0.001", 0.84, seed=0, metric="macro_f1", score=0.72),
        result("lora", "0.001", 0.86, seed=1, metric="macro_f1", score=0.68),
        result("lora", "0.002", 0.82, seed=0, metric="macro_f1", score=0.79),
        result("lora", "0.002", 0.84, seed=1, metric="macro_f1", score=0.81),
    ]
    chosen = select(runs)["lora"]
    assert (chosen["trial"], chosen["metric"]) == ("0.002", "macro_f1")
    assert chosen["val_score"] == pytest.approx(0.80) and chosen["val_accuracy"] == pytest.approx(0.83)
    # Equal scores on the metric: the tie still goes to the cheaper setting, whatever the accuracy.
    tied = select(
        [
            result("lora", "r16", 0.90, params=2000, values={"lora.r": 16}, metric="macro_f1", score=0.8),
            result("lora", "r4", 0.80, params=500, values={"lora.r": 4}, metric="macro_f1", score=0.8),
        ]
    )
    assert tied["lora"]["values"] == {"lora.r": 4}
    with pytest.raises(ValueError, match="different metrics"):
        select([*runs, result("lora", "0.003", 0.9)])


def test_a_tie_goes_to_the_cheaper_setting():
    chosen = select(
        [
            result("lora", "r16", 0.85, params=2000, values={"lora.r": 16}),
            result("lora", "r4", 0.85, params=500, values={"lora.r": 4}),
            result("lora", "r8", 0.85, params=1000, values={"lora.r": 8}),
        ]
    )
    assert chosen["lora"]["values"] == {"lora.r": 4}
    # Equal parameters: the shorter training wins.
    timed = select([result("full", "1e-05", 0.9, seconds=20.0), result("full", "2e-05", 0.9, seconds=10.0)])
    assert timed["full"]["trial"] == "2e-05"


def test_a_failed_or_diverged_trial_is_never_chosen():
    chosen = select(
        [
            result("full", "8e-05", None, status="failed"),  # diverged: no validation accuracy
            result("full", "1e-05", 0.60),
            result("lora", "0.01", 0.99, seed=0),
            result("lora", "0.01", None, seed=1, status="failed"),
            result("lora", "0.001", 0.70, seed=0),
            result("lora", "0.001", 0.72, seed=1),
        ]
    )
    assert chosen["full"]["trial"] == "1e-05"
    assert chosen["lora"]["trial"] == "0.001"  # one failed seed disqualifies the trial
    nothing = select([result("ia3", "0.1", None, status="failed")])
    assert nothing["ia3"]["values"] is None and "no trial ended ok" in nothing["ia3"]["reason"]


def test_final_runs_take_the_chosen_values_and_untuned_strategies_keep_theirs():
    config = checked_config(
        config_with({"lora": {"learning_rate": [1.0e-3, 2.0e-3]}, "full": None, "qlora": None, "ia3": None})
    )
    before = copy.deepcopy(config)
    tuned = apply_selection(
        config,
        {
            "lora": {"values": {"learning_rate": 2.0e-3}, "val_accuracy": 0.9},
            "ia3": {"values": None, "val_accuracy": None},
        },
    )
    assert resolve_run(tuned, strategy="lora", seed=1).learning_rate == 2.0e-3
    assert resolve_run(tuned, strategy="ia3", seed=1).learning_rate == 3.0e-3
    assert config == before


def test_a_trial_record_gives_its_best_epoch_and_loss():
    record = {
        "strategy": "lora",
        "seed": 0,
        "status": "ok",
        "metrics": {"best_val_accuracy": 0.8, "train_time_s": 12.0, "trainable_params": 5},
        "val_curve": [{"epoch": 1, "accuracy": 0.7, "loss": 0.6}, {"epoch": 2, "accuracy": 0.8, "loss": 0.5}],
    }
    got = trial_result(record, Trial(strategy="lora", values={"learning_rate": 1.0e-3}))
    assert (got.trial, got.val_accuracy, got.val_loss, got.train_time_s) == ("learning_rate=0.001", 0.8, 0.5, 12.0)
    assert (got.metric, got.val_score) == ("accuracy", 0.8)  # a record from before tasks had a metric
    # Chosen on MCC at epoch 1, whose accuracy is lower: its loss is epoch 1's.
    record["metrics"] |= {"best_epoch": 1, "best_val_metric": "mcc", "best_val_score": 0.4, "best_val_accuracy": 0.7}
    got = trial_result(record, Trial(strategy="lora", values={"learning_rate": 1.0e-3}))
    assert (got.metric, got.val_score, got.val_accuracy, got.val_loss) == ("mcc", 0.4, 0.7, 0.6)


def test_a_trial_never_reads_the_test_split(tiny_roberta, tiny_tokenized, tmp_path, monkeypatch):
    read = []
    real = batching.load_tokenized

    def recording(directory, *, splits=("train", "validation", "test")):
        read.extend(splits)
        return real(directory, splits=splits)

    monkeypatch.setattr(training, "load_tokenized", recording)
    spec = make_spec(tiny_roberta, "lora")
    result_ = training.train_run(
        spec=spec, tokenized_dir=tiny_tokenized, model_out_dir=None, checkpoint_dir=tmp_path / "ckpt", device=CPU
    )
    assert result_.status == "ok" and result_.metrics["adapter_size_mb"] is None
    assert set(read) == {"train", "validation"}
    assert not (tmp_path / "model").exists()


def test_a_grid_of_epochs_trains_each_trial_its_own_epochs():
    config = checked_config(config_with({"lora": {"epochs": [1, 2]}}, epochs=1))
    found = trials(config)["lora"]
    assert [trial_spec(config, trial, seed=0).epochs for trial in found] == [1, 2]
    # Without the grid's epochs, the trials' own epochs (tuning.epochs) still apply.
    config = checked_config(config_with({"lora": {"learning_rate": [1.0e-3]}}, epochs=1))
    assert trial_spec(config, trials(config)["lora"][0], seed=0).epochs == 1


def test_the_tuning_summary_has_the_one_definitions_columns_with_the_tuned_keys_after_the_trial(tmp_path):
    import json

    import pandas as pd

    from ftcompare.contract import versioned
    from ftcompare.plan.tuning import SUMMARY_COLUMNS, select_settings_job, summary_keys

    grid, paths = {}, []
    for number, rate in enumerate((1e-4, 3e-4)):
        trial = f"learning_rate={rate:g}"
        grid[f"lora/{trial}"] = {"learning_rate": rate}
        record = {
            "kind": "train",
            "task": "sst2",
            "model": "m",
            "strategy": "lora",
            "seed": 0,
            "trial": trial,
            "status": "ok",
            "config": {"task": "sst2", "model": "m", "metric": "accuracy"},
            "metrics": {"best_val_accuracy": 0.5 + number / 10, "best_epoch": 1, "train_time_s": 1.0},
            "val_curve": [{"epoch": 1, "accuracy": 0.5 + number / 10, "loss": 0.7}],
        }
        paths.append(tmp_path / f"{number}.json")
        paths[-1].write_text(json.dumps(versioned(record)))
    selected = select_settings_job(
        trial_records=paths, grid=grid, summary_path=tmp_path / "summary.csv", selected_path=tmp_path / "selected.json"
    )
    summary = pd.read_csv(tmp_path / "summary.csv")
    after_trial = list(SUMMARY_COLUMNS).index("trial") + 1
    assert list(summary.columns) == [*SUMMARY_COLUMNS[:after_trial], "learning_rate", *SUMMARY_COLUMNS[after_trial:]]
    assert summary_keys(summary) == ["learning_rate"] and summary["task"].tolist() == ["sst2", "sst2"]
    assert selected["lora"]["values"] == {"learning_rate": 3e-4}
