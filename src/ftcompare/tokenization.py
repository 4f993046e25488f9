"""Tokenize the prepared splits once into an Arrow dataset shared by every strategy.

No padding here: batches are padded when they are built, to the longest review in the
batch (rounded up to a multiple of 8), so the cache holds only the real tokens and the
padding policy can change without re-tokenizing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from ftcompare.data import SPLITS
from ftcompare.models import load_tokenizer, max_sequence_length
from ftcompare.sources import check_model_source

log = logging.getLogger(__name__)


def tokenize_splits(
    *, split_paths: Mapping[str, Path], model_name_or_path: str, max_length: int, out_dir: Path
) -> dict[str, int]:
    """Tokenize train/validation/test Parquet files into `out_dir` (datasets.save_to_disk).

    Fails before any work if the model source is unusable or `max_length` exceeds what
    the model's position embeddings allow. Returns the number of rows per split.
    """
    import datasets

    check_model_source(model_name_or_path)
    limit = max_sequence_length(model_name_or_path)
    if max_length > limit:
        raise ValueError(
            f"training.max_length = {max_length} exceeds what {model_name_or_path!r} allows "
            f"({limit} tokens, from its position embeddings); set training.max_length <= {limit}"
        )
    tokenizer = load_tokenizer(model_name_or_path)

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        return {
            "input_ids": encoded["input_ids"],
            "length": [len(ids) for ids in encoded["input_ids"]],
        }

    splits = {}
    for split in SPLITS:
        frame = pd.read_parquet(split_paths[split])
        dataset = datasets.Dataset.from_pandas(frame, preserve_index=False)
        encoded = dataset.map(encode, batched=True, remove_columns=["text"], desc=f"tokenize {split}")
        # int32 ids: half the cache of the default int64, and every vocabulary fits.
        splits[split] = encoded.cast_column("input_ids", datasets.Sequence(datasets.Value("int32")))
    dataset_dict = datasets.DatasetDict(splits)
    dataset_dict.save_to_disk(str(out_dir))
    stats = {
        split: {
            "rows": len(ds),
            "median_length": float(pd.Series(ds["length"]).median()),
            "truncated_fraction": float((pd.Series(ds["length"]) >= max_length).mean()),
        }
        for split, ds in splits.items()
    }
    meta = {
        "data": str(Path(split_paths["train"]).parent),
        "model": model_name_or_path,
        "max_length": max_length,
        "num_labels": int(max(max(ds["label"]) for ds in splits.values())) + 1,
        # Batches are padded later with this id; RoBERTa's is 1, BERT's 0.
        "pad_token_id": int(tokenizer.pad_token_id),
        "splits": stats,
    }
    (Path(out_dir) / "tokenization.json").write_text(json.dumps(meta, indent=2) + "\n")
    for split, split_stats in stats.items():
        log.info("%s: %s", split, split_stats)
    log.info("tokenized %s into %s", meta["data"], out_dir)
    return {split: s["rows"] for split, s in stats.items()}
