"""The results layout: folder names of tasks, models and runs, where a study writes and what
no command may overwrite, where hub sources are fetched, and the caches' keys.

Torch-free and importing nothing above ftcompare.contract."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ftcompare.contract.errors import UsageError

# Task and model names are folder names (results/runs/<task>/<model>/...).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def _folder_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "data"
    return name if re.match(NAME_PATTERN, name) else f"x{name}"


def default_task_name(data: Mapping[str, Any]) -> str:
    """The one task of a config without `tasks`: a hub dataset's last name part (and its
    configuration), else the folder of its training file (aclImdb: the folder itself)."""
    if data.get("source", "hub") == "hub":
        name = str(data.get("name") or "data").rsplit("/", 1)[-1]
        return _folder_name(f"{name}-{data['config']}" if data.get("config") else name)
    train = PurePosixPath(str(data.get("train") or "data"))
    return _folder_name(train.name if data.get("source") == "aclimdb" else train.parent.name or train.stem)


def default_model_name(name_or_path: str) -> str:
    """The one model of a config without `models`: a hub id's or a folder's last part,
    package:NAME's NAME."""
    if name_or_path.startswith("package:"):
        return _folder_name(name_or_path.removeprefix("package:"))
    return _folder_name(PurePosixPath(name_or_path.rstrip("/")).name)


# --------------------------------------------------------------------------- layout
# A run's folder; a trial's (the workflow's rules write them: ftcompare.plan.graph). Attempt
# files: beside a job's outputs, not among them, so that Snakemake never deletes them; each
# job writes one and its retry marker reads it back. Hub sources are fetched into
# results/sources/.
RUN = "results/runs/{task}/{model}/{strategy}/seed{seed}"
TRIAL = "results/tuning/{task}/{model}/trials/{strategy}/{trial}/seed{seed}"
FINETUNE_ATTEMPT = f"{RUN}/attempt.json"
EVALUATE_ATTEMPT = f"{RUN}/eval-attempt.json"
TRIAL_ATTEMPT = f"{TRIAL}/attempt.json"
# A run folder's path below the study's folder (the one holding results/) has this many parts.
RUN_DEPTH = len(RUN.split("/"))
RUN_EXAMPLE = RUN.format(task="imdb", model="roberta-base", strategy="lora", seed=0)  # what messages and help show


# Every cell's trials in one table, beside the cells' folders results/tuning/<task>/ (the report rule).
TUNING_SUMMARY = "results/tuning/summary.csv"

# Every planned run and trial, written under results/ when a study starts
# (ftcompare.plan.write_plan) for `ftcompare status` to show those not started yet.
PLAN_FILE = "plan.json"


# The folders a study writes under its results/ (the workflow's rules): runs and trials,
# caches, fetched sources, logs, events, figures. Nothing but the workflow writes in them.
STUDY_FOLDERS = (
    "runs",
    "tuning",
    "checkpoints",
    "data",
    "tokenized",
    "sources",
    "logs",
    "tensorboard",
    "figures",
    "benchmarks",
)


def is_run_folder(folder: Path) -> bool:
    """A run's (or a trial's) folder, wherever it was copied: its train record beside its
    attempt file or its model folder (a train.json alone may be anyone's)."""
    return (folder / "train.json").is_file() and ((folder / "attempt.json").is_file() or (folder / "model").is_dir())


def _owner(path: Path) -> Path | None:
    """The study-owned folder `path` is or lies inside: a run folder (wherever it was
    copied), or one of STUDY_FOLDERS of a results/ folder."""
    for folder in (path, *path.parents):
        if is_run_folder(folder):
            return folder
        if folder.name in STUDY_FOLDERS and folder.parent.name == "results":
            return folder
    return None


def _held(path: Path) -> Path | None:
    """A run folder or study-owned folder that folder `path` holds, or None. Only what
    replacing `path` would delete is searched."""
    if not path.is_dir():
        return None
    for name in STUDY_FOLDERS:
        for candidate in (path / name, path / "results" / name):
            if candidate.is_dir() and candidate.parent.name == "results":
                return candidate
    return next((record.parent for record in path.rglob("train.json") if is_run_folder(record.parent)), None)


def check_target(path: str | Path, *, option: str) -> None:
    """Refuse (UsageError) a target a command of `ftcompare` would write or replace when it
    is, holds or lies inside a run folder or a folder a study owns under its results/
    (STUDY_FOLDERS): those hold what the study computed and its report reads, `--force` or
    not. Every writing command calls this before any work; --force then replaces only the
    one file or export folder the user named."""
    resolved = Path(path).resolve()
    inside = _owner(resolved)
    if inside is not None:
        run = _first_run(resolved) or _first_run(inside)  # one the target would replace, where it holds any
        raise UsageError(
            f"{option} {str(path)!r} lies inside {str(inside)!r}, which the study wrote"
            + (f" (the run {str(run)!r})" if run is not None else "")
            + ": write outside the study's results/ folders and run folders; --force replaces only a file or "
            "export folder of your own"
        )
    held = _held(resolved)
    if held is not None:
        run = _first_run(held)
        raise UsageError(
            f"{option} {str(path)!r} holds {str(held)!r}, which the study wrote"
            + (f" (the run {str(run)!r} among others)" if run is not None and run != held else "")
            + ": give a new folder outside the study's results/ folders and run folders"
        )


def _first_run(folder: Path) -> Path | None:
    """A run folder at or below `folder` (or the run folder `folder` lies in), for messages."""
    for candidate in (folder, *folder.parents):
        if is_run_folder(candidate):
            return candidate
    if not folder.is_dir():
        return None
    return next((record.parent for record in sorted(folder.rglob("train.json")) if is_run_folder(record.parent)), None)


def study_folder(run_dir: str | Path) -> Path | None:
    """The study's folder (where Snakemake ran, holding results/) of a run folder; None
    when the folder is not where a study puts runs."""
    parents = Path(run_dir).resolve().parents
    return parents[RUN_DEPTH - 1] if len(parents) >= RUN_DEPTH and parents[RUN_DEPTH - 2].name == "results" else None


def fetched_model_folder(results: str | Path, name_or_path: str) -> Path:
    """Where the fetch_model rule copies hub model `name_or_path` under `results`."""
    return Path(results) / "sources" / "models" / hub_folder(name_or_path)


def hub_folder(name: str, settings: Mapping[str, Any] | None = None) -> str:
    """A readable folder name for a hub model (org--name) or dataset (with a key of its
    configuration and splits: MNLI matched and mismatched read the same dataset)."""
    folder = name.replace("/", "--")
    return folder if settings is None else f"{folder}-{_key(settings)[:8]}"


def _key(settings: Mapping[str, Any]) -> str:
    from ftcompare.contract.layout import cache_key

    return cache_key(settings)


def cache_key(settings: Mapping[str, Any]) -> str:
    """A short folder name for the outputs of `settings` (12 hex digits of the SHA-256 of
    their canonical JSON). Stage outputs live under the key of exactly the settings that
    produce them, as DVC does: another config writes elsewhere, so an edit that fails (or
    is abandoned) leaves the finished outputs untouched, and the restored config finds
    its own outputs, with their Snakemake records, where it left them."""
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
