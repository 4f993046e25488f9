"""A study's cost before it runs (ftcompare.plan.cost, ftcompare.plan.estimate): tokens from the
tokenized cache or the data's size, throughput from finished runs, a calibration or the
assumed figures, each job's time limit and cluster group, and `ftcompare plan`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ftcompare.contract import ConfigError
from ftcompare.plan import Cell, cost, load_config
from ftcompare.plan import estimate as planning

REPO_ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {"device": None, "safety_factor": 3, "min_runtime_minutes": 15, "group_under_minutes": 10}
GLUE = {"source": "hub", "name": "nyu-mll/glue", "train_split": "train", "test_split": "validation"}


# --------------------------------------------------------------------------- tokens


def test_the_tokenized_cache_counts_every_token_and_an_older_cache_rows_times_median():
    splits = {s: {"rows": 10, "median_length": 20.0, "tokens": 150} for s in ("train", "validation", "test")}
    exact = cost.tokens_from_cache({"splits": splits})
    assert (exact.train, exact.validation, exact.test, exact.rows) == (150, 150, 150, 30)
    assert exact.source == "tokenized cache"
    older = cost.tokens_from_cache({"splits": {s: {"rows": 10, "median_length": 20.0} for s in splits}})
    assert older.train == 200 and "median" in older.source
    assert cost.tokens_from_cache({"splits": {"train": splits["train"]}}) is None


def test_rows_follow_prepare_data_subsets_and_the_carved_validation_split():
    data = {"train_size": 400, "test_size": None, "validation_fraction": 0.2}
    assert cost.split_rows(data, {"train": 1000, "test": 277}) == {"train": 320, "validation": 80, "test": 277}
    # A size beyond the data's is the data's; a source's own validation split is used as given.
    data = {"train_size": 10**6, "test_size": 5, "validation_fraction": 0.1}
    assert cost.split_rows(data, {"train": 100, "validation": 7, "test": 50}) == {
        "train": 100,
        "validation": 7,
        "test": 5,
    }


def test_a_hub_task_is_sized_before_anything_is_fetched_capped_at_max_length():
    rte = {**GLUE, "config": "rte", "validation_fraction": 0.1, "train_size": None, "test_size": None}
    tokens = cost.estimated_tokens(rte, max_length=128)
    mean = cost.figures()["mean_tokens"]["nyu-mll/glue/rte"]["tokens"]
    assert tokens.train == (2490 - 249) * mean and tokens.validation == 249 * mean and tokens.test == 277 * mean
    assert "dataset card" in tokens.source and "estimate" in tokens.source
    assert cost.estimated_tokens(rte, max_length=16).train == (2490 - 249) * 16


def test_an_unknown_hub_dataset_has_no_size_until_fetched():
    with pytest.raises(ConfigError, match="no size or length is known for hub dataset 'someone/else'"):
        cost.estimated_tokens({**GLUE, "name": "someone/else", "validation_fraction": 0.1}, max_length=128)


def test_local_files_are_sized_from_their_rows_and_characters(tmp_path):
    frame = pd.DataFrame({"text": ["a" * 42] * 10, "label": [0, 1] * 5})
    frame.to_parquet(tmp_path / "train.parquet")
    frame.head(4).to_parquet(tmp_path / "test.parquet")
    data = {
        "source": "parquet",
        "train": str(tmp_path / "train.parquet"),
        "test": str(tmp_path / "test.parquet"),
        "text_column": "text",
        "validation_fraction": 0.2,
    }
    tokens = cost.estimated_tokens(data, max_length=512)
    per_row = 42 / cost.figures()["chars_per_token"]["value"] + cost.figures()["special_tokens"]
    assert tokens.train == pytest.approx(8 * per_row) and tokens.test == pytest.approx(4 * per_row)


def test_a_cell_reads_its_cache_once_it_exists(tmp_path):
    rte = {**GLUE, "config": "rte", "validation_fraction": 0.1, "train_size": None, "test_size": None}
    assert cost.cell_tokens(rte, max_length=128, tokenized_dir=tmp_path).source.startswith("estimate")
    splits = {s: {"rows": 1, "median_length": 5.0, "tokens": 7} for s in ("train", "validation", "test")}
    (tmp_path / "tokenization.json").write_text(json.dumps({"splits": splits}))
    assert cost.cell_tokens(rte, max_length=128, tokenized_dir=tmp_path).train == 7


# --------------------------------------------------------------------------- throughput


def test_method_families_and_device_names():
    assert cost.family("full") == "full fine-tuning"
    assert cost.family("lora") == "low-rank"
    assert cost.family("qlora", {"bits": 4}) == "quantized"
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        cost.family("nope")
    assert cost.same_device("H200", "NVIDIA H200") and cost.same_device("nvidia h200", "NVIDIA H200")
    assert not cost.same_device("NVIDIA H100", "NVIDIA H200") and not cost.same_device("", "NVIDIA H200")


def test_finished_runs_beat_a_calibration_which_beats_the_assumed_figures():
    key = {"model": "roberta-base", "family": "low-rank", "device": "NVIDIA H200", "stage": "train"}
    assumed = cost.Throughput().rate(**key)
    assert assumed.tokens_per_s == cost.figures()["devices"]["NVIDIA H200"]["train"]["low-rank"]["tokens_per_s"]
    assert assumed.source.startswith("assumed: BENCHMARKS.md")
    calibrated = [cost.Figure(**{**key, "device": "H200"}, tokens_per_s=1000.0)]
    assert cost.Throughput(calibrated=calibrated).rate(**key) == cost.Rate(1000.0, "calibrated")
    measured = [cost.Figure(**key, tokens_per_s=r) for r in (10.0, 30.0, 20.0)]
    found = cost.Throughput(measured=measured, calibrated=calibrated).rate(**key)
    assert found == cost.Rate(20.0, "measured: 3 finished run(s)")
    # Another model measured says nothing of this one.
    assert cost.Throughput(measured=[cost.Figure(**{**key, "model": "x"}, tokens_per_s=5.0)]).rate(**key) == assumed


def test_a_device_nothing_describes_says_whose_figure_it_took():
    found = cost.Throughput().rate(model="roberta-base", family="full fine-tuning", device="Tesla V100", stage="train")
    assert "nothing known for device 'Tesla V100'" in found.source


def test_finished_runs_and_their_evaluations_are_read_back(tmp_path):
    run = tmp_path / "runs" / "imdb" / "m" / "lora" / "seed0"
    run.mkdir(parents=True)
    record = {
        "status": "ok",
        "config": {"model_name_or_path": "org/m", "method": "lora", "quantization": None},
        "provenance": {"device": "NVIDIA H200"},
        "metrics": {"tokens_per_s": 123.0},
    }
    (run / "train.json").write_text(json.dumps(record))
    (run / "eval.json").write_text(json.dumps({"metrics": {"eval_tokens_per_s": 456.0}}))
    failed = tmp_path / "runs" / "imdb" / "m" / "full" / "seed0"
    failed.mkdir(parents=True)
    (failed / "train.json").write_text(json.dumps({**record, "status": "failed"}))
    assert cost.run_figures(tmp_path) == [
        cost.Figure("org/m", "low-rank", "NVIDIA H200", "train", 123.0),
        cost.Figure("org/m", "low-rank", "NVIDIA H200", "evaluate", 456.0),
    ]


def test_a_calibration_is_stored_with_its_device_and_replaces_only_its_own_figures(tmp_path):
    path = tmp_path / "calibration.json"
    old = [cost.Figure("m", "low-rank", "cpu", "train", 1.0), cost.Figure("m", "full fine-tuning", "cpu", "train", 2.0)]
    cost.write_calibration(path, old)
    cost.write_calibration(path, [cost.Figure("m", "low-rank", "cpu", "train", 3.0)])
    assert sorted(f.tokens_per_s for f in cost.read_calibration(path)) == [2.0, 3.0]
    assert cost.Throughput(calibrated=cost.read_calibration(path)).default_device() == "cpu"
    path.write_text("{}")
    with pytest.raises(ConfigError, match="not a calibration file"):
        cost.read_calibration(path)


def test_a_step_costs_its_fixed_part_so_short_texts_cost_more_per_token():
    spec = type("Spec", (), {"epochs": 2, "batch_size": 16, "max_tokens_per_batch": 8192})()
    short = cost.Tokens(train=3200, validation=0, test=0, source="", rows=320, train_rows=320)  # 10 tokens a row
    long = cost.Tokens(train=3200, validation=0, test=0, source="", rows=20, train_rows=20)  # 160 tokens a row
    assert cost.steps_per_epoch(short, batch_size=16, max_tokens_per_batch=8192) == 20  # batch_size caps
    assert cost.steps_per_epoch(long, batch_size=64, max_tokens_per_batch=1600) == 2  # the budget caps
    rate = cost.Rate(tokens_per_s=100.0, source="calibrated", step_s=0.5)
    assert cost.training_seconds(short, spec=spec, train=rate) == pytest.approx(2 * 20 * 0.5 + 64)
    assert cost.training_seconds(long, spec=spec, train=rate) == pytest.approx(2 * 2 * 0.5 + 64)


# --------------------------------------------------------------------------- time limits


def test_a_time_limit_is_the_estimate_times_the_safety_factor_above_a_floor_growing_with_attempts():
    assert cost.runtime_minutes(3600, attempt=1, settings=SETTINGS, kind="finetune") == 180
    assert cost.runtime_minutes(3600, attempt=2, settings=SETTINGS, kind="finetune") == 360
    assert cost.runtime_minutes(10, attempt=1, settings=SETTINGS, kind="trial") == 15
    assert cost.runtime_minutes(10, attempt=3, settings=SETTINGS, kind="trial") == 45
    # Unknown size: the flat limit of its kind.
    assert (
        cost.runtime_minutes(None, attempt=2, settings=SETTINGS, kind="evaluate") == 2 * cost.FLAT_MINUTES["evaluate"]
    )


def test_only_jobs_estimated_under_the_threshold_are_grouped():
    assert cost.group_of(9 * 60, settings=SETTINGS) == "short"
    assert cost.group_of(10 * 60, settings=SETTINGS) is None
    assert cost.group_of(None, settings=SETTINGS) is None
    assert cost.group_of(1, settings={**SETTINGS, "group_under_minutes": None}) is None


def glue_costs(throughput: cost.Throughput | None = None) -> cost.StudyCosts:
    from ftcompare.plan import checked_study

    config = load_config(REPO_ROOT / "config" / "glue.yaml")
    resolved, cells = checked_study(config)
    return cost.StudyCosts(
        cells, seeds=resolved["seeds"], settings=SETTINGS, results="nowhere", throughput=throughput or cost.Throughput()
    )


def calibrated(tokens_per_s: float, device: str = "old GPU") -> cost.Throughput:
    return cost.Throughput(
        calibrated=[
            cost.Figure("roberta-base", family, device, stage, tokens_per_s)
            for family in ("full fine-tuning", "low-rank")
            for stage in ("train", "evaluate")
        ]
    )


def test_each_job_is_sized_to_its_task_mnli_far_above_rte():
    costs = glue_costs(calibrated(30_000.0))
    mnli, rte = Cell("mnli", "roberta-base"), Cell("rte", "roberta-base")
    assert costs.device == "old GPU"  # the calibration's, where the config names none
    assert costs.estimate("finetune", mnli, "full").seconds > 20 * costs.estimate("finetune", rte, "full").seconds
    assert costs.runtime("finetune", mnli, "full") > 5 * costs.runtime("finetune", rte, "full")
    assert costs.runtime("finetune", rte, "full") == 15  # the floor
    assert costs.group("finetune", rte, "lora") == "short"
    assert costs.group("finetune", mnli, "full") is None
    # A short evaluation is grouped with its fine-tune's group, never held behind a large fine-tune.
    assert costs.estimate("evaluate", mnli, "full").seconds < 60 * SETTINGS["group_under_minutes"]
    assert costs.group("evaluate", rte, "lora") == "short"
    assert costs.group("evaluate", mnli, "full") is None
    # A rule's callables, as Snakemake calls them.
    wildcards = type("W", (), {"task": "mnli", "model": "roberta-base", "strategy": "full", "get": lambda s, k: None})()
    assert costs.runtime_of("finetune")(wildcards, 2) == 2 * costs.runtime("finetune", mnli, "full")
    assert costs.group_of("finetune")(wildcards) is None


def test_a_slower_device_gives_longer_limits_even_before_any_calibration():
    mnli = Cell("mnli", "roberta-base")
    fast = glue_costs().estimate("finetune", mnli, "full")
    assert fast.rate_source.startswith("assumed: BENCHMARKS.md")
    slow = glue_costs(calibrated(30_000.0)).estimate("finetune", mnli, "full")
    assert slow.rate_source == "calibrated" and slow.seconds > 5 * fast.seconds


# --------------------------------------------------------------------------- ftcompare plan


def test_the_plan_counts_every_job_and_the_tuning_share():
    rows = planning.plan_rows(glue_costs())
    assert len(rows) == 7 * 4  # tasks x the default strategies
    first = rows[0]
    assert first["finetune_jobs"] == first["evaluate_jobs"] == 3 and first["trial_jobs"] == 5
    assert first["total_h"] == pytest.approx(first["trial_h"] + first["finetune_h"] + first["evaluate_h"])
    t = planning.totals(rows)
    assert t["jobs"] == sum(r["trial_jobs"] + 6 for r in rows)
    assert 0 < t["tuning_share"] < 1 and t["hours"] == pytest.approx(sum(r["total_h"] for r in rows))
    assert t["startup_hours"] == pytest.approx(t["jobs"] * cost.startup_seconds() / 3600)


def run_plan(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    code = (
        "import sys; from ftcompare.use.cli import main; code = main(sys.argv[1:]); "
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; "
        "assert not heavy, f'imported {heavy}'; sys.exit(code)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "plan", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_ftcompare_plan_reads_the_study_as_snakemake_does_and_imports_no_torch(tmp_path):
    proc = run_plan("--directory", str(REPO_ROOT / ".test"), "--csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(pd.read_csv(__import__("io").StringIO(proc.stdout)).itertuples())
    assert {(r.task, r.strategy) for r in rows} == {(t, s) for t in ("imdb", "sst2", "rte") for s in ("full", "lora")}
    # An overlay given from elsewhere, as to snakemake: two seeds; another device.
    overlay = tmp_path / "one.yaml"
    overlay.write_text("seeds: [0, 1]\n")
    proc = run_plan("--directory", str(REPO_ROOT / ".test"), "--configfile", str(overlay), "--device", "H100")
    assert proc.returncode == 0, proc.stderr
    assert "study on H100: 24 GPU jobs (0 tuning trials)" in proc.stdout
    assert "nothing known for device 'H100'" in proc.stdout


def test_ftcompare_plan_refuses_a_bad_config_in_one_line(tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text("cost: {safety_factor: 0.5}\n")
    proc = run_plan("--directory", str(REPO_ROOT / ".test"), "--configfile", str(overlay))
    assert proc.returncode == 2
    assert proc.stderr.startswith("ftcompare plan: error: invalid config") and "cost.safety_factor" in proc.stderr
    proc = run_plan("--directory", str(tmp_path))
    assert proc.returncode == 2 and "config/config.yaml is missing" in proc.stderr
