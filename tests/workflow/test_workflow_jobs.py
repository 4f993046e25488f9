"""End-to-end, how jobs run: two GPUs running two fine-tunes at once, each on its own
(four jobs on four devices and a fifth waiting: tests/contract/test_devices.py), and jobs
that load what a local rule fetched, with the network off."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from specs import cell_runs
from workflow_runs import (
    REPO_ROOT,
    overlay,
    snakemake_command,
)

from ftcompare.use import cli

pytestmark = pytest.mark.e2e


def small_study(workdir: Path, data_dir: Path, model: str, **data) -> Path:
    """The four strategies on the tiny model, 240 training reviews, 64 tokens, one epoch."""
    settings = {
        "data": {
            "source": "parquet",
            # A hub source reads no local files, and the plan refuses keys a source does not read.
            **(
                {}
                if data.get("source") == "hub"
                else {"train": str(data_dir / "train.parquet"), "test": str(data_dir / "test.parquet")}
            ),
            "train_size": 300,
            "test_size": 100,
            "validation_fraction": 0.2,
            **data,
        },
        "model": {"name_or_path": model},
        "training": {"max_length": 64, "epochs": 1, "batch_size": 16, "eval_batch_size": 64},
        "seeds": [0],
        "tuning": {"enabled": False},
    }
    return overlay(workdir, "small", settings)


def locks_held(directory: Path) -> int:
    """How many of the per-device lock files some process holds now."""
    held = 0
    for path in directory.glob("*.lock"):
        with path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held += 1
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
    return held


def test_two_gpus_run_two_finetunes_at_once_each_on_its_own(tmp_path, imdb_sample, tiny_roberta):
    """`snakemake --cores 16 --resources gpu=2` on a machine with two GPUs (here: two
    device entries that CUDA never opens on this CPU) runs the two fine-tunes together."""
    config = small_study(tmp_path, imdb_sample, str(tiny_roberta))
    lock_dir = tmp_path / "gpu-locks"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1", "FTCOMPARE_GPU_LOCK_DIR": str(lock_dir)}
    runs = f"results/runs/data/{tiny_roberta.name}"  # ftcompare.plan.matrix names the sample's folder and the model's
    targets = [f"{runs}/{s}/seed0/train.json" for s in ("full", "lora")]
    command = snakemake_command(tmp_path, config, args=tuple(targets), cores=16, gpus=2)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    most_held = 0
    while process.poll() is None:
        if lock_dir.is_dir():
            most_held = max(most_held, locks_held(lock_dir))
        time.sleep(0.1)
    output = process.stdout.read()
    assert process.returncode == 0, output[-5000:]
    assert most_held == 2, output[-3000:]
    claimed = [json.loads((tmp_path / target).read_text())["provenance"]["cuda_visible_devices"] for target in targets]
    assert sorted(claimed) == ["0", "1"]
    assert not locks_held(lock_dir)  # every job released its device


def test_jobs_load_what_a_local_rule_fetched_without_network(tmp_path, imdb_sample, tiny_roberta):
    """A hub model and a hub dataset: the fetch rules download them (a fake hub here)
    on the submitting machine; every other job runs with the hub off and no network."""
    config = small_study(tmp_path, imdb_sample, "fake-org/tiny-roberta", source="hub", name="fake/imdb")
    log_path = tmp_path / "hub.jsonl"
    log_path.touch()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
        },
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests" / "fake_hub"), os.environ.get("PYTHONPATH", "")]),
        "FAKE_HUB_LOG": str(log_path),
        "FAKE_HUB_MODELS": json.dumps({"fake-org/tiny-roberta": str(tiny_roberta)}),
        "FAKE_HUB_DATASETS": json.dumps({"fake/imdb": str(imdb_sample)}),
    }
    # LoRA alone: its adapter loads the fetched base as full fine-tuning's model loads it,
    # and names the configured base besides.
    target = "results/runs/imdb/tiny-roberta/lora/seed0/eval.json"
    result = subprocess.run(
        snakemake_command(tmp_path, config, args=(target,)),
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    by_kind = {}
    for event in events:
        by_kind.setdefault(event["event"], []).append(event)
    # One download of each, nothing else reached for the network or the hub.
    assert [e["repo_id"] for e in by_kind.pop("snapshot_download")] == ["fake-org/tiny-roberta"]
    assert [e["name"] for e in by_kind.pop("load_dataset")] == ["fake/imdb"]
    imports = by_kind.pop("import transformers")
    assert by_kind == {}, by_kind  # no "network", no "offline-call"
    # The fine-tune and the evaluation, each loading transformers with the hub off
    # (tokenize reads the fetched tokenizer with the `tokenizers` library alone).
    scripts = sorted(Path(e["argv"][-1]).suffixes[-2] for e in imports if e["argv"][-1].endswith(".py"))
    assert scripts == [".evaluate", ".finetune"], imports
    assert {e["hf_hub_offline"] for e in imports} == {"1"}, imports
    fetched = tmp_path / "results" / "sources" / "models" / "fake-org--tiny-roberta"
    assert (fetched / "config.json").is_file() and (fetched / "model.safetensors").is_file()
    lora = cell_runs(tmp_path) / "lora" / "seed0"
    assert json.loads((lora / "train.json").read_text())["config"]["model_name_or_path"] == "fake-org/tiny-roberta"
    assert json.loads((lora / "eval.json").read_text())["status"] == "ok"
    # The hub's class names reached the model, and predictions use them.
    assert json.loads((lora / "model" / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    # The adapter names its base as configured; here it loads from the study's fetched copy.
    assert json.loads((lora / "model" / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "fake-org/tiny-roberta"
    )
    (tmp_path / "new.txt").write_text("What a wonderful film.\nA waste of two hours.\n")
    assert (
        cli.main(["predict", str(lora), "--input", str(tmp_path / "new.txt"), "--output", str(tmp_path / "p.csv")]) == 0
    )
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert list(predictions.columns) == ["row", "prediction", "prob_neg", "prob_pos"]
    assert set(predictions["prediction"]) <= {"neg", "pos"} and len(predictions) == 2
