"""Download what the jobs need from the Hugging Face Hub, where there is network.

GPU nodes of a cluster often have no internet. The workflow's `fetch_model` and
`fetch_data` rules are local rules: they run on the machine Snakemake runs on, before any
job that needs their outputs, and copy the model (config, tokenizer, weights) and a hub
dataset into results/sources/. Every other job reads those local copies with the hub
switched off (OFFLINE_ENV): a job that still reached for the network fails at once,
rather than working on a login node and hanging on a compute node. Local sources
(folders, `package:`, Parquet, CSV, aclImdb) need no download.

Kept free of torch; `datasets` and `huggingface_hub` are imported when called.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from ftcompare.contract import WEIGHT_FILES, ModelSourceError, check_model_source

log = logging.getLogger(__name__)


# What from_pretrained reads: config and tokenizer files (JSON, vocabularies and merges
# as text, SentencePiece models) and safetensors weights. Not the TensorFlow, Flax, ONNX
# or Rust copies many model repositories also hold (roberta-base: 2.6 GB of them).
MODEL_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]
# Only for repositories without safetensors weights.
FALLBACK_WEIGHT_PATTERNS = ["pytorch_model*.bin"]


# Written into the fetched model folder: which hub model it copies. `ftcompare predict`
# loads a run's base model from the study's copy only when this names the run's model.
FETCHED_FROM = "ftcompare-fetched.json"


def fetch_model(repo_id: str, out_dir: Path, *, model_type: str | None = None) -> Path:
    """Download hub model `repo_id` into the plain folder `out_dir`, which from_pretrained
    then loads offline. Fails naming what is missing if the folder cannot load, or if its
    config.json's model_type is not `model_type`, the one the config states (on which the
    study's checks of which methods apply, before any job, relied)."""
    import huggingface_hub

    out_dir = Path(out_dir)
    try:
        huggingface_hub.snapshot_download(repo_id, local_dir=str(out_dir), allow_patterns=MODEL_PATTERNS)
    except Exception as exc:  # offline, no such repository, gated, network: all say the same to the user
        raise ModelSourceError(
            f"model.name_or_path = {repo_id!r}: cannot download it from the Hugging Face Hub "
            f"({type(exc).__name__}: {exc}). Set it to a hub model id this machine can reach, "
            "or to a local folder with config.json, tokenizer files and weights"
        ) from exc
    if not any((out_dir / name).is_file() for name in WEIGHT_FILES):
        log.info("%s has no safetensors weights; fetching %s", repo_id, FALLBACK_WEIGHT_PATTERNS)
        huggingface_hub.snapshot_download(repo_id, local_dir=str(out_dir), allow_patterns=FALLBACK_WEIGHT_PATTERNS)
    check_model_source(str(out_dir))
    fetched_type = json.loads((out_dir / "config.json").read_text()).get("model_type")
    if model_type is not None and fetched_type != model_type:
        raise ModelSourceError(
            f"model {repo_id!r}: the config states model_type {model_type!r}, the fetched config.json says "
            f"{fetched_type!r}; set its model_type to {fetched_type!r} (which methods apply, and their module "
            "names, depend on it) and run the study again"
        )
    (out_dir / FETCHED_FROM).write_text(json.dumps({"repo_id": repo_id}) + "\n")
    size_mb = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file()) / 1e6
    log.info("fetched model %s into %s (%.0f MB)", repo_id, out_dir, size_mb)
    return out_dir


def fetch_dataset(
    name: str,
    out_paths: Mapping[str, Path],
    *,
    config: str | None = None,
    splits: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Download hub dataset `name` (configuration `config`) and write the split each role
    reads, `splits` = {role: hub split name} (default: train and test), to Parquet
    (`out_paths[role]`; all columns, as the hub has them, and `datasets`' record of their
    features, which names a ClassLabel's classes). Returns the rows per role."""
    from ftcompare.data.splits import DEFAULT_HUB_SPLITS, DataError, load_hub

    splits = dict(splits or DEFAULT_HUB_SPLITS)
    if missing := sorted(set(splits) - set(out_paths)):
        raise ValueError(f"fetch_dataset: no output path for role(s) {missing}")
    try:
        loaded = load_hub(name, config=config, splits=splits)
    except DataError:
        raise
    except Exception as exc:  # offline, no such dataset, gated, network: all say the same to the user
        why = " ".join(str(exc).split())[:300]
        raise DataError(
            f"data.name = {name!r}: cannot download it from the Hugging Face Hub ({type(exc).__name__}: {why}). "
            "Run where the Hub is reachable (HF_HUB_OFFLINE and HF_DATASETS_OFFLINE unset), or point the task "
            "at local files (source: parquet or csv, train and test)"
        ) from exc
    rows = {}
    for role, dataset in loaded.items():
        path = Path(out_paths[role])
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.to_parquet(str(path))
        rows[role] = len(dataset)
    log.info("fetched dataset %s%s: %s rows", name, f" ({config})" if config else "", rows)
    return rows
