"""End-to-end studies of the real pretrained encoder (the MiniLM package) on the committed
sample: full fine-tuning learns, and the methods least like LoRA run through every job."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from specs import cell_runs
from workflow_runs import (
    REPO_ROOT,
    SAMPLE_MINILM_RUNS,
    overlay,
    snakemake,
)

pytestmark = pytest.mark.e2e


def test_minilm_full_finetuning_learns(tmp_path, imdb_sample, minilm_path):
    """The real pretrained encoder, the quick recipe, the sample's 1,000 test reviews: clearly above chance."""
    data = {"train": str(imdb_sample / "train.parquet"), "test": str(imdb_sample / "test.parquet"), "test_size": None}
    settings = overlay(tmp_path, "minilm", {"data": data})
    result = snakemake(
        tmp_path,
        REPO_ROOT / "config" / "quick.yaml",
        REPO_ROOT / "config" / "shared-imdb.yaml",
        settings,
        args=(f"{SAMPLE_MINILM_RUNS}/full/seed0/eval.json",),
    )
    assert result.returncode == 0, result.stderr[-5000:]
    record = json.loads((cell_runs(tmp_path) / "full" / "seed0" / "eval.json").read_text())
    metrics = record["metrics"]
    assert metrics["n_test"] == 1000
    assert metrics["accuracy_ci_low"] > 0.65, metrics  # chance is 0.5

    # What its head reads (bench/head_inputs.py) on the real encoder: the pretrained
    # encoder's at the start, the trained one's at the end, where a probe is above chance too.
    probe = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "head_inputs.py"), str(cell_runs(tmp_path) / "full" / "seed0")],
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    rows = dict(re.findall(r"^\S+/full/seed0\s+(start|end)\s+(.+)$", probe.stdout, flags=re.M))
    assert set(rows) == {"start", "end"} and rows["start"] != rows["end"], probe.stdout
    cosine, accuracy = (float(value) for value in rows["end"].split())
    assert -1.0 <= cosine <= 1.0 and accuracy > 0.6, probe.stdout


def test_minilm_new_methods_run_through_the_workflow(tmp_path, imdb_sample):
    """config/methods.yaml's strategies that differ most from LoRA (BitFit written here,
    AdaLoRA's per-step rank allocation, prefix tuning's virtual tokens) through the
    fine-tune and evaluate jobs on the real encoder and the committed sample."""
    data = {
        "train": str(imdb_sample / "train.parquet"),
        "test": str(imdb_sample / "test.parquet"),
        "train_size": 400,
        "test_size": 100,
    }
    # 64 tokens, not quick.yaml's 128: what is tested is that each runs, not how well.
    settings = overlay(tmp_path, "minilm", {"data": data, "training": {"max_length": 64}})
    configs = ("quick.yaml", "shared-imdb.yaml", "methods.yaml", "quick-methods.yaml")
    methods = ("bitfit", "adalora", "prefix_tuning")
    result = snakemake(
        tmp_path,
        *(REPO_ROOT / "config" / name for name in configs),
        settings,
        args=tuple(f"{SAMPLE_MINILM_RUNS}/{method}/seed0/eval.json" for method in methods),
    )
    assert result.returncode == 0, result.stderr[-5000:]
    for method in methods:
        run = cell_runs(tmp_path) / method / "seed0"
        train = json.loads((run / "train.json").read_text())
        evaluation = json.loads((run / "eval.json").read_text())
        assert train["status"] == evaluation["status"] == "ok", (method, train.get("reason"))
        metrics = train["metrics"]
        assert metrics["method_params"] > 0 and metrics["head_params"] > 0, method
        assert metrics["method_params"] + metrics["head_params"] == metrics["trainable_params"], method
        assert evaluation["metrics"]["n_test"] == 100, method
    prefix = json.loads((cell_runs(tmp_path) / "prefix_tuning" / "seed0" / "train.json").read_text())
    assert prefix["metrics"]["text_max_length"] == 64  # MiniLM's 512 positions leave room for the 20 tokens
