"""A run's settings for the tests: the study's config, sized for a tiny model on a CPU."""

from __future__ import annotations

from pathlib import Path

import torch

from ftcompare.config import load_config, resolve_run, validate_config

CPU = torch.device("cpu")


def make_spec(model_path: Path, strategy: str, entry: dict | None = None, **training):
    """`strategy` as config.yaml has it, or as `entry` (a strategy entry) says."""
    config = load_config()
    config["model"]["name_or_path"] = str(model_path)
    if entry is not None or strategy not in config["strategies"]:
        config["strategies"][strategy] = entry
    config["training"].update(
        {
            "max_length": 64,
            "epochs": 1,
            "batch_size": 16,
            "eval_batch_size": 64,
            "log_every_steps": 5,
            "checkpoint_every_minutes": None,
            **training,
        }
    )
    return resolve_run(validate_config(config), strategy=strategy, seed=0)
