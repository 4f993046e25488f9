"""Tokenize the prepared splits once into Arrow files shared by every strategy.

No padding here: batches are padded when they are built (to the longest review, or a
bucket), so the cache holds only the real tokens and the padding policy can change
without re-tokenizing. The tokenizer is the model's own `tokenizer.json` run by the
`tokenizers` library: the same Rust tokenizer transformers wraps, without importing
torch. Each split is one Arrow IPC file (`<split>.arrow`: input_ids, label, length)
that `batching.load_tokenized` reads with pyarrow alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from ftcompare.contract import (
    ModelSourceError,
    check_max_length,
    check_model_source,
    max_sequence_length,
    model_file,
)
from ftcompare.data.splits import SPLITS, text_columns_or_default

log = logging.getLogger(__name__)

ENCODE_BATCH = 1000  # reviews per call: bounds the memory of the encoded batch


def load_tokenizer(name_or_path: str, *, max_length: int) -> tuple[Any, int]:
    """The model's fast tokenizer (`tokenizers.Tokenizer`), truncating at `max_length` and
    padding nothing (a tokenizer.json may carry its own settings for both), and its padding id."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(model_file(name_or_path, "tokenizer.json")))
    except ModelSourceError as exc:
        raise ModelSourceError(
            f"{exc}: the tokenize stage needs the model's fast tokenizer file, tokenizer.json"
        ) from exc
    settings = json.loads(model_file(name_or_path, "tokenizer_config.json").read_text())
    pad = settings.get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    pad_id = tokenizer.token_to_id(pad) if pad else None
    if pad_id is None:
        raise ModelSourceError(f"model.name_or_path = {name_or_path!r}: its tokenizer has no padding token ({pad!r})")
    tokenizer.no_padding()
    # longest_first: a pair loses tokens from its longer text first (the tokenizer's default).
    tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
    return tokenizer, pad_id


def encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text: what the tokenize stage stores, and what `ftcompare predict`
    feeds the model, so that both see the same ids."""
    return [encoding.ids for encoding in _encodings(tokenizer, list(texts))]


def _encodings(tokenizer: Any, inputs: list[Any]) -> list[Any]:
    return [
        encoding
        for start in range(0, len(inputs), ENCODE_BATCH)
        for encoding in tokenizer.encode_batch(inputs[start : start + ENCODE_BATCH])
    ]


def _segments(encoding: Any) -> tuple[tuple[int, int], tuple[int, int, int]]:
    """A pair encoding's (first, second) text tokens and its layout: the special tokens
    before, between and after the texts (sequence_ids None)."""
    sequence_ids = encoding.sequence_ids
    first = [i for i, s in enumerate(sequence_ids) if s == 0]
    second = [i for i, s in enumerate(sequence_ids) if s == 1]
    if not first or not second or first[-1] - first[0] + 1 != len(first) or second[-1] - second[0] + 1 != len(second):
        raise ValueError(f"a pair encoding whose texts are not two runs of tokens (sequence ids {sequence_ids})")
    layout = (first[0], second[0] - first[-1] - 1, len(sequence_ids) - second[-1] - 1)
    return (len(first), len(second)), layout


def uses_segment_ids(name_or_path: str) -> bool:
    """Whether the model reads segment ids (token_type_ids), which tell a pair's two texts
    apart: a config type_vocab_size above 1 (BERT, MiniLM, DeBERTa-v2 with segments).
    RoBERTa has 1 (every token segment 0: nothing to tell), ModernBERT none."""
    config = json.loads(model_file(name_or_path, "config.json").read_text())
    return int(config.get("type_vocab_size") or 0) > 1


def _pair_types(encoding: Any) -> tuple[int, ...]:
    """A pair encoding's segment ids per template part (batching.TokenizedSplit.pair_types):
    each special token's, and one for each text's run of tokens."""
    types, previous = [], None
    for sequence, type_id in zip(encoding.sequence_ids, encoding.type_ids):
        if sequence is None or sequence != previous:
            types.append(int(type_id))
        previous = sequence
    return tuple(types)


def encode_pairs(
    tokenizer: Any, texts: Sequence[str], pairs: Sequence[str]
) -> tuple[list[list[int]], Any, tuple, tuple[int, ...]]:
    """Token ids of each pair of texts by the tokenizer's own pair encoding (its pair
    template, truncation longest_first at its max_length); what the tokenize stage stores
    and `ftcompare predict` feeds the model. Also each pair's two texts' token counts
    before any cut (n x 2) and the template's layout, with which batching.cut_pair cuts a
    pair to a shorter budget as the tokenizer would (models.fit_text_budget), and the
    template's segment ids per part (batching.pair_type_ids rebuilds a row's token_type_ids
    from them)."""
    import numpy as np

    from ftcompare.data.batching import longest_first, pair_type_ids

    inputs = list(zip(texts, pairs))
    encodings = _encodings(tokenizer, inputs)
    truncation = tokenizer.truncation
    tokenizer.no_truncation()
    try:
        whole = _encodings(tokenizer, inputs)
    finally:
        tokenizer.enable_truncation(**truncation)
    counts, layouts = zip(*(_segments(e) for e in whole)) if whole else ((), ())
    if len(set(layouts)) > 1:
        raise ValueError(f"the tokenizer's pair template varies between rows ({sorted(set(layouts))})")
    layout = layouts[0] if layouts else (0, 0, 0)
    types = _pair_types(whole[0]) if whole else (0,) * (sum(layout) + 2)
    # The cut batching.cut_pair makes, and the segment ids batching.pair_type_ids gives
    # the cut row, must be the tokenizer's own: checked on every row.
    budget = truncation["max_length"] - sum(layout)
    for row, (encoding, full) in enumerate(zip(encodings, counts)):
        kept, _ = _segments(encoding)
        if kept != longest_first(*full, budget):
            raise ValueError(
                f"pair {row}: the tokenizer kept {kept} of {full} tokens, not longest_first's "
                f"{longest_first(*full, budget)}: a truncation this code does not reproduce"
            )
        if pair_type_ids(len(encoding.ids), np.array(full), layout, types).tolist() != list(encoding.type_ids):
            raise ValueError(
                f"pair {row}: the tokenizer's segment ids {encoding.type_ids} do not follow its pair template's {types}"
            )
    return [e.ids for e in encodings], np.array(counts, dtype=np.int64).reshape(-1, 2), layout, types


def _tokenize_split(frame: pd.DataFrame, tokenizer: Any, *, max_length: int, path: Path) -> tuple[dict, tuple | None]:
    """One prepared split as an Arrow file at `path`: its statistics, and for a pair task its
    template (layout, segment ids per part; None: one text a row)."""
    columns, template = {}, None
    if "text_pair" in frame.columns:
        ids, pair_tokens, layout, types = encode_pairs(tokenizer, frame["text"].tolist(), frame["text_pair"].tolist())
        template = (layout, types)
        columns["pair_tokens"] = pa.array(list(pair_tokens), type=pa.list_(pa.int32(), 2))
    else:
        ids = encode(tokenizer, frame["text"].tolist())
    lengths = pd.Series([len(row) for row in ids], dtype="int32")
    # int32 ids: half the cache of int64, and every vocabulary fits.
    table = pa.table(
        {
            "input_ids": pa.array(ids, type=pa.list_(pa.int32())),
            "label": pa.array(frame["label"].to_numpy(), type=pa.int64()),
            "length": pa.array(lengths.to_numpy(), type=pa.int32()),
            **columns,
        }
    )
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    stats = {
        "rows": len(frame),
        # Every token of the split, what a plan's estimate of a run reads (ftcompare.plan.cost).
        "tokens": int(lengths.sum()),
        "median_length": float(lengths.median()),
        "truncated_fraction": float((lengths >= max_length).mean()),
    }
    return stats, template


def tokenize_splits(
    *,
    split_paths: Mapping[str, Path],
    model_name_or_path: str,
    max_length: int,
    out_dir: Path,
    label_names: Sequence[str] | None = None,
    text_columns: Mapping[str, str | None] | None = None,
) -> dict[str, int]:
    """Tokenize train/validation/test Parquet files into `out_dir`.

    Fails before any work if the model source is unusable or `max_length` exceeds what
    the model's position embeddings allow. `label_names`: the classes' names where the
    data has them (the data summary's), kept in tokenization.json for the runs. Returns
    the number of rows per split.
    """
    check_model_source(model_name_or_path)
    check_max_length(max_length, limit=max_sequence_length(model_name_or_path), model=model_name_or_path)
    tokenizer, pad_token_id = load_tokenizer(model_name_or_path, max_length=max_length)
    segment_ids = uses_segment_ids(model_name_or_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    stats, num_labels, pair_layout, pair_types = {}, 0, None, None
    for split in SPLITS:
        frame = pd.read_parquet(split_paths[split])
        stats[split], template = _tokenize_split(
            frame, tokenizer, max_length=max_length, path=out_dir / f"{split}.arrow"
        )
        if template is not None:  # a sentence-pair task (data.text_pair_column)
            layout, types = template
            if pair_layout not in (None, layout) or pair_types not in (None, types):
                raise ValueError(f"the pair template differs between splits ({pair_layout} and {layout})")
            pair_layout, pair_types = layout, types
        num_labels = max(num_labels, int(frame["label"].max()) + 1)
    if label_names is not None and len(label_names) != num_labels:
        raise ValueError(f"label_names {list(label_names)} must name the {num_labels} classes of the data")
    meta = {
        "data": str(Path(split_paths["train"]).parent),
        "model": model_name_or_path,
        "max_length": max_length,
        "num_labels": num_labels,
        # Label k's name, or null where the data names none (then the classes are their numbers).
        "label_names": None if label_names is None else list(label_names),
        # Batches are padded later with this id; RoBERTa's is 1, BERT's 0.
        "pad_token_id": pad_token_id,
        # The source's columns behind `text` and `text_pair` (prepare_data keeps them):
        # what the runs record, so that `ftcompare predict` and the model card know a pair task.
        "text_columns": text_columns_or_default(text_columns),
        # A pair task's template: special tokens before, between and after its two texts.
        "pair_layout": None if pair_layout is None else list(pair_layout),
        # Its segment id per template part (batching.pair_type_ids), where the model reads
        # segment ids (uses_segment_ids); null: batches carry no token_type_ids.
        "pair_type_ids": list(pair_types) if pair_types is not None and segment_ids else None,
        "splits": stats,
    }
    (out_dir / "tokenization.json").write_text(json.dumps(meta, indent=2) + "\n")
    for split, split_stats in stats.items():
        log.info("%s: %s", split, split_stats)
    log.info("tokenized %s into %s", meta["data"], out_dir)
    return {split: s["rows"] for split, s in stats.items()}
