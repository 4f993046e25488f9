"""Batches from the tokenized cache: length-grouped order and dynamic padding.

IMDB reviews run from a few dozen to thousands of tokens; padding every batch to 512
spends most of the compute on padding. Grouping reviews of similar length into a batch
and padding to the longest one (rounded up to a multiple of 8, which tensor cores like)
removes most of it. Batch order stays random, seeded by (seed, epoch), so a resumed run
sees exactly the batches the interrupted one would have.

A token budget (`max_tokens`, padded tokens per batch) bounds memory by what a batch
really holds, not by its review count: batches of short reviews grow up to `batch_size`
reviews while batches of long ones shrink, so the budget, not the review count, sets
the peak of training (and of the validation inside it).

Buckets (`bucket_width`) go one step further for CUDA graphs: widths are multiples of
`bucket_width` and every batch of one width holds the same number of reviews (the
budget's share for that width; the last batch of each width is topped up with filler
rows that the loss ignores), so an epoch has at most max_length / bucket_width batch
shapes, each of which can be recorded once and replayed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftcompare.data.splits import SPLITS
from ftcompare.data.tokenized import tokenization_meta

# Sort within windows of this many batches: long enough to group lengths well, short
# enough that each epoch still mixes reviews from the whole training set.
GROUP_WINDOW_BATCHES = 50


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizedSplit:
    """One split held in memory as token-id arrays (fast to batch, no per-row Arrow reads)."""

    input_ids: list[np.ndarray]
    labels: np.ndarray
    lengths: np.ndarray
    # A sentence-pair task: each row's two texts' token counts before any cut (n x 2) and
    # the special tokens its pair template puts before, between and after them (PairLayout).
    pair_tokens: np.ndarray | None = None
    pair_layout: tuple[int, int, int] | None = None
    # The segment id (token_type_ids) the pair template gives each of its parts, in order:
    # the special tokens before, the first text, those between, the second text, those
    # after (one entry per special token, one per text). Set only where the model reads
    # segment ids (config type_vocab_size > 1: BERT, MiniLM; not RoBERTa or ModernBERT);
    # None: batches carry no token_type_ids, as a single text's never do.
    pair_types: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def truncated(self, length: int) -> TokenizedSplit:
        """Every row cut to at most `length` tokens as the tokenizer truncates: the first
        length - 1 tokens and the row's closing (special) token; a pair as the tokenizer
        cuts a pair at `length` (longest_first: the longer text loses tokens first)."""
        if self.pair_tokens is not None and self.pair_layout is not None:
            ids = [cut_pair(row, full, self.pair_layout, length) for row, full in zip(self.input_ids, self.pair_tokens)]
            return dataclasses.replace(self, input_ids=ids, lengths=np.array([len(row) for row in ids], dtype=np.int64))
        ids = [row if len(row) <= length else np.concatenate([row[: length - 1], row[-1:]]) for row in self.input_ids]
        return dataclasses.replace(self, input_ids=ids, lengths=np.minimum(self.lengths, length))


def longest_first(first: int, second: int, budget: int) -> tuple[int, int]:
    """The tokens of two texts of `first` and `second` tokens that the `tokenizers`
    library keeps within `budget` (max_length less the pair's special tokens) under its
    longest_first strategy (TruncationStrategy::LongestFirst, right-hand truncation)."""
    if first + second <= budget:
        return first, second
    short, long_ = min(first, second), max(first, second)
    long_ = short if short > budget else max(short, budget - short)
    if short + long_ > budget:
        short = budget // 2
        long_ = short + budget % 2
    return (long_, short) if first > second else (short, long_)


def pair_type_ids(length: int, full: np.ndarray, layout: tuple[int, int, int], types: tuple[int, ...]) -> np.ndarray:
    """The segment ids of a pair row of `length` tokens whose texts had `full` = (first,
    second) tokens before any cut: its texts' kept tokens follow from its length as the
    tokenizer cut them (longest_first), so a row cut to a shorter budget (cut_pair) gets
    the ids of its own cut."""
    before, between, after = layout
    if len(types) != before + between + after + 2:
        raise ValueError(f"pair types {types} do not fit the pair layout {layout}")
    first, second = longest_first(int(full[0]), int(full[1]), length - before - between - after)
    ids = np.asarray(types, dtype=np.int64)
    counts = np.ones(len(types), dtype=np.int64)
    counts[before] = first  # the first text's entry
    counts[before + 1 + between] = second  # the second text's
    return np.repeat(ids, counts)


def cut_pair(row: np.ndarray, full: np.ndarray, layout: tuple[int, int, int], length: int) -> np.ndarray:
    """A pair's ids `row` (before, text, between, pair, after) cut to `length` tokens as the
    tokenizer would cut the texts of `full` = (first, second) tokens at `length`."""
    before, between, after = layout
    specials = before + between + after
    kept = longest_first(int(full[0]), int(full[1]), len(row) - specials)  # the row as it is
    first, second = longest_first(int(full[0]), int(full[1]), length - specials)
    if (first, second) == kept:
        return row
    pair_start = before + kept[0] + between
    return np.concatenate(
        [
            row[: before + first],
            row[before + kept[0] : pair_start],
            row[pair_start : pair_start + second],
            row[pair_start + kept[1] :],
        ]
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenizedData:
    splits: dict[str, TokenizedSplit]
    num_labels: int
    pad_token_id: int
    max_length: int
    label_names: list[str] | None = None  # label k's name; None: the data names its classes by number


def load_tokenized(directory: Path, *, splits: tuple[str, ...] = SPLITS) -> TokenizedData:
    """Read the cache `tokenization.tokenize_splits` wrote: one Arrow file per split, with
    pyarrow alone (no `datasets`: a slow import, and absent on some GPU images)."""
    import pyarrow as pa

    directory = Path(directory)
    meta = tokenization_meta(directory)
    loaded = {}
    for name in splits:
        with pa.memory_map(str(directory / f"{name}.arrow")) as source:
            table = pa.ipc.open_file(source).read_all()
        ids = table.column("input_ids").combine_chunks()
        flat = ids.values.to_numpy(zero_copy_only=False)
        offsets = ids.offsets.to_numpy()
        pair = "pair_tokens" in table.column_names
        pair_types = _pair_types(meta, directory) if pair else None
        loaded[name] = TokenizedSplit(
            input_ids=[flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)],
            labels=table.column("label").to_numpy().astype(np.int64),
            lengths=table.column("length").to_numpy().astype(np.int64),
            pair_tokens=np.stack(table.column("pair_tokens").to_pylist()).astype(np.int64) if pair else None,
            pair_layout=tuple(meta["pair_layout"]) if pair else None,
            pair_types=pair_types,
        )
    return TokenizedData(
        splits=loaded,
        num_labels=int(meta["num_labels"]),
        pad_token_id=int(meta["pad_token_id"]),
        max_length=int(meta["max_length"]),
        label_names=meta.get("label_names"),
    )


def _pair_types(meta: dict[str, Any], directory: Path) -> tuple[int, ...] | None:
    """A pair cache's segment-id template (None: the model reads no segment ids). A pair
    cache written before the template was recorded would feed BERT-style models one
    segment without a word: refused."""
    if "pair_type_ids" not in meta:
        raise ValueError(
            f"{directory} holds sentence pairs tokenized before their segment ids (token_type_ids) were "
            "recorded: delete it and tokenize again"
        )
    types = meta["pair_type_ids"]
    return None if types is None else tuple(int(t) for t in types)


def padded_width(longest: int, pad_to_multiple_of: int) -> int:
    return -(-int(longest) // pad_to_multiple_of) * pad_to_multiple_of


def bucket_rows(width: int, *, batch_size: int, max_tokens: int | None) -> int:
    """Reviews in every batch of padded width `width` when batching by buckets."""
    return batch_size if max_tokens is None else max(1, min(batch_size, max_tokens // width))


def epoch_batches(
    lengths: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    group_by_length: bool,
    max_tokens: int | None = None,
    pad_to_multiple_of: int = 1,
    bucket_width: int | None = None,
) -> list[np.ndarray]:
    """Index arrays of one epoch's batches, in training order; deterministic in (seed, epoch).

    A batch holds at most `batch_size` reviews and, if `max_tokens` is set, at most that
    many tokens once padded (reviews x longest length rounded up to `pad_to_multiple_of`).
    With `bucket_width` (which groups by length by itself), see `_bucket_batches`.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if bucket_width is not None:
        return _bucket_batches(
            order, lengths, rng=rng, batch_size=batch_size, max_tokens=max_tokens, bucket_width=bucket_width
        )
    if not group_by_length:
        return _cut(order, lengths, batch_size=batch_size, max_tokens=max_tokens, multiple=pad_to_multiple_of)
    window = batch_size * GROUP_WINDOW_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        # Longest first within each window (stable sort keeps the random tie order); cut
        # per window so that no batch mixes one window's shortest with the next's longest.
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += _cut(chunk, lengths, batch_size=batch_size, max_tokens=max_tokens, multiple=pad_to_multiple_of)
    rng.shuffle(batches)  # the list order, not the batches' contents
    return batches


def _bucket_batches(
    order: np.ndarray,
    lengths: np.ndarray,
    *,
    rng: np.random.Generator,
    batch_size: int,
    max_tokens: int | None,
    bucket_width: int,
) -> list[np.ndarray]:
    """Reviews of one padded width (a multiple of `bucket_width`) in random order, cut into
    batches of `bucket_rows(width)`; then all batches shuffled. Only the last batch of each
    width is short."""
    widths = -(-lengths[order] // bucket_width) * bucket_width
    if max_tokens is not None and len(widths) and widths.max() > max_tokens:
        raise ValueError(f"a review of {int(widths.max())} padded tokens exceeds max_tokens = {max_tokens}")
    batches = []
    for width in np.unique(widths).tolist():
        members = order[widths == width]  # keeps the epoch's random order
        rows = bucket_rows(width, batch_size=batch_size, max_tokens=max_tokens)
        batches += [members[i : i + rows] for i in range(0, len(members), rows)]
    rng.shuffle(batches)  # the list order, not the batches' contents
    return batches


def _cut(
    order: np.ndarray, lengths: np.ndarray, *, batch_size: int, max_tokens: int | None, multiple: int
) -> list[np.ndarray]:
    """Split `order` into consecutive batches within the review and padded-token limits."""
    if max_tokens is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    widths = -(-lengths[order] // multiple) * multiple
    if len(widths) and widths.max() > max_tokens:
        raise ValueError(f"a review of {int(widths.max())} padded tokens exceeds max_tokens = {max_tokens}")
    batches, start, widest = [], 0, 0
    for i, width in enumerate(widths.tolist()):
        grown = max(widest, width)
        if i - start + 1 > batch_size or (i - start + 1) * grown > max_tokens:
            batches.append(order[start:i])
            start, grown = i, width
        widest = grown
    if start < len(order):
        batches.append(order[start:])
    return batches


def eval_batches(
    lengths: np.ndarray, *, batch_size: int, max_tokens: int | None = None, pad_to_multiple_of: int = 1
) -> list[np.ndarray]:
    """Batches for inference: sorted by length so padding is minimal; order restored by index.
    Limits as in `epoch_batches`: at most `batch_size` reviews and `max_tokens` padded tokens."""
    order = np.argsort(-lengths, kind="stable")
    return _cut(order, lengths, batch_size=batch_size, max_tokens=max_tokens, multiple=pad_to_multiple_of)


IGNORED_LABEL = -100  # what the models' cross-entropy skips: filler rows add nothing to loss or gradient


def collate(
    split: TokenizedSplit, indices: np.ndarray, *, pad_token_id: int, pad_to_multiple_of: int, rows: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad one batch to its longest member, rounded up to `pad_to_multiple_of`.

    `rows` tops the batch up to that many rows with filler: one attended pad token (a row
    with nothing attended would make attention NaN) and the ignored label. A pair split
    whose model reads segment ids (`pair_types`) adds `token_type_ids`, padding and filler
    rows 0 (they are masked out as padding is)."""
    width = padded_width(split.lengths[indices].max(), pad_to_multiple_of)
    rows = len(indices) if rows is None else rows
    if rows < len(indices):
        raise ValueError(f"rows = {rows} cannot hold a batch of {len(indices)} reviews")
    input_ids = np.full((rows, width), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((rows, width), dtype=np.int64)
    attention_mask[len(indices) :, 0] = 1
    labels = np.full(rows, IGNORED_LABEL, dtype=np.int64)
    labels[: len(indices)] = split.labels[indices]
    types = split.pair_types if split.pair_tokens is not None and split.pair_layout is not None else None
    token_type_ids = None if types is None else np.zeros((rows, width), dtype=np.int64)
    for row, index in enumerate(indices):
        ids = split.input_ids[index]
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        if token_type_ids is not None:
            full = split.pair_tokens[index]
            token_type_ids[row, : len(ids)] = pair_type_ids(len(ids), full, split.pair_layout, types)
    batch = {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention_mask),
        "labels": torch.from_numpy(labels),
    }
    if token_type_ids is not None:
        batch["token_type_ids"] = torch.from_numpy(token_type_ids)
    return batch


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainBatching:
    """How one run cuts and pads its training batches: the settings of `epoch_batches` and
    `collate` in one place, for the training loop and the bench alike."""

    batch_size: int
    max_tokens: int | None
    group_by_length: bool
    pad_to_multiple_of: int
    bucket_width: int | None = None

    @classmethod
    def from_spec(cls, spec: Any) -> TrainBatching:  # a methods.spec.RunSpec
        return cls(
            batch_size=spec.batch_size,
            max_tokens=spec.max_tokens_per_batch,
            group_by_length=spec.group_by_length,
            pad_to_multiple_of=spec.pad_to_multiple_of,
            bucket_width=spec.bucket_width,
        )

    @property
    def multiple(self) -> int:
        return self.bucket_width or self.pad_to_multiple_of

    def epoch(self, lengths: np.ndarray, *, seed: int, epoch: int) -> list[np.ndarray]:
        return epoch_batches(
            lengths,
            batch_size=self.batch_size,
            seed=seed,
            epoch=epoch,
            group_by_length=self.group_by_length,
            max_tokens=self.max_tokens,
            pad_to_multiple_of=self.pad_to_multiple_of,
            bucket_width=self.bucket_width,
        )

    def width(self, lengths: np.ndarray, indices: np.ndarray) -> int:
        return padded_width(lengths[indices].max(), self.multiple)

    def rows(self, lengths: np.ndarray, indices: np.ndarray) -> int:
        """Rows of the collated batch: its reviews, or with buckets its width's fixed count."""
        if self.bucket_width is None:
            return len(indices)
        return bucket_rows(self.width(lengths, indices), batch_size=self.batch_size, max_tokens=self.max_tokens)

    def collate(self, split: TokenizedSplit, indices: np.ndarray, *, pad_token_id: int) -> dict[str, torch.Tensor]:
        return collate(
            split,
            indices,
            pad_token_id=pad_token_id,
            pad_to_multiple_of=self.multiple,
            rows=self.rows(split.lengths, indices),
        )
