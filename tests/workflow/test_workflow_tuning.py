"""End-to-end tuning: a study that tunes LoRA's rate over a good and a useless value, and what
its edits rerun (the real encoder's grid choosing the rate that learns: test_workflow_minilm.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from specs import cell_runs, cell_tuning
from workflow_runs import (
    overlay,
    planned_jobs,
    snakemake,
    tiny_study,
)

from ftcompare.contract import read_selection

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tuning_study(tmp_path_factory, imdb_sample, tiny_roberta):
    """A study whose lora strategy is tuned over two rates, one far too small to learn,
    beside full fine-tuning, untuned (the study's QLoRA and IA3 skipped: this is about tuning)."""
    workdir = tmp_path_factory.mktemp("tuning")
    base = overlay(
        workdir,
        "study",
        {
            **tiny_study(imdb_sample, tiny_roberta),
            "models": {"tiny-roberta": {"name_or_path": str(tiny_roberta), "skip_strategies": ["qlora", "ia3"]}},
            "tuning": {
                "enabled": True,
                "seeds": [0],
                "epochs": 1,
                "grid": {"full": None, "qlora": None, "ia3": None, "lora": {"learning_rate": [1.0e-8, 5.0e-3]}},
            },
        },
    )
    plan = planned_jobs(workdir, base)
    result = snakemake(workdir, base)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, base, plan


def test_tuning_chooses_on_validation_and_keeps_the_test_split_out(tuning_study):
    workdir, _, plan = tuning_study
    assert plan == {
        "prepare_data": 1,
        "tokenize": 1,
        "tune": 2,
        "select_settings": 1,
        "finetune": 2,
        "evaluate": 2,
        "report": 1,
        "all": 1,
    }
    tuning = cell_tuning(workdir)
    trials = pd.read_csv(workdir / "results" / "tuning" / "summary.csv")
    assert list(trials.columns) == [
        "task",
        "model",
        "strategy",
        "trial",
        "learning_rate",
        "seed",
        "status",
        "metric",
        "val_score",
        "val_accuracy",
        "val_loss",
        "train_time_s",
    ]
    assert set(trials["metric"]) == {"accuracy"} and trials["val_score"].equals(trials["val_accuracy"])
    assert list(trials["trial"]) == ["learning_rate=1e-08", "learning_rate=0.005"] and set(trials["status"]) == {"ok"}
    selected = read_selection(tuning / "selected.yaml")
    # A tiny random model may score both rates alike: ties go to the cheaper trial, here
    # the shorter training (both train the same parameters).
    best = trials.sort_values(["val_accuracy", "train_time_s"], ascending=[False, True]).iloc[0]
    assert selected["lora"]["values"] == {"learning_rate": best["learning_rate"]}
    assert selected["lora"]["val_accuracy"] == pytest.approx(best["val_accuracy"])
    # The final runs used the chosen rate; the trials kept no model and have no test results.
    final = json.loads((cell_runs(workdir) / "lora" / "seed0" / "train.json").read_text())
    assert final["config"]["learning_rate"] == best["learning_rate"]
    # (progress.json: what `ftcompare status` reads while a trial runs.)
    for folder in (tuning / "trials" / "lora").iterdir():
        assert sorted(p.name for p in (folder / "seed0").iterdir()) == ["attempt.json", "progress.json", "train.json"]
    report = (workdir / "results" / "report.md").read_text()
    section = report.split("## Tuning")[1].split("## ")[0]
    assert "| lora | learning_rate: 1e-08, 0.005 |" in section and "Runner-up" in section
    assert (workdir / "results" / "figures" / "tuning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_strategy = pd.read_csv(workdir / "results" / "summary_by_strategy.csv").set_index("strategy")
    assert by_strategy.loc["full", "n_ok"] == 1 and by_strategy["verdict"].notna().all()
    # A tiny random encoder may learn nothing: tested against the baseline wherever both sides learned.
    others = by_strategy.drop(index="full")
    both_learned = ~others["did_not_learn"] & (not by_strategy.loc["full", "did_not_learn"])
    assert others["p_value_holm"].notna().tolist() == both_learned.tolist()


def test_a_new_losing_value_reruns_its_trial_and_the_selection_not_the_final_runs(tuning_study):
    workdir, base, _ = tuning_study
    runs = cell_runs(workdir)
    final = runs / "lora" / "seed0" / "train.json"
    before = final.stat().st_mtime_ns
    untuned = {p: p.stat().st_mtime_ns for p in (runs / "full" / "seed0").glob("*.json")}
    assert {p.name for p in untuned} >= {"train.json", "eval.json"}
    # A rate that diverges is sure to lose: the tiny random model scores working rates
    # alike, and a tie could go to the new trial if it trained faster.
    losing = overlay(workdir, "losing", {"tuning": {"grid": {"lora": {"learning_rate": [1.0e-8, 5.0e-3, 1.0e6]}}}})
    result = snakemake(workdir, base, losing)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert log.count("rule tune:") == 1 and "checkpoint select_settings:" in log and "rule report:" in log
    assert "rule finetune:" not in log and final.stat().st_mtime_ns == before
    # lora's evaluation reruns (docs/tuning-and-statistics.md: Snakemake keeps it once
    # planned behind the selection); no other strategy's run or evaluation is touched.
    assert {p: p.stat().st_mtime_ns for p in untuned} == untuned
    trials = pd.read_csv(workdir / "results" / "tuning" / "summary.csv").set_index("trial")
    assert trials.loc["learning_rate=1e+06", "status"] == "failed"
    assert planned_jobs(workdir, base, losing) == {}


def test_turning_tuning_off_returns_to_the_configured_settings(tuning_study):
    workdir, base, _ = tuning_study
    off = overlay(workdir, "off", {"tuning": {"enabled": False}})
    # Only lora was tuned: its final run reruns at the configured rate, then its evaluation and the report.
    assert planned_jobs(workdir, base, off) == {"finetune": 1, "evaluate": 1, "report": 1, "all": 1}
