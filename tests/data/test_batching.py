"""Tests for ftcompare.data.batching: length-grouped epoch order, eval order and padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ftcompare.data import (
    GROUP_WINDOW_BATCHES,
    IGNORED_LABEL,
    TokenizedSplit,
    TrainBatching,
    bucket_rows,
    collate,
    epoch_batches,
    eval_batches,
    padded_width,
)

PAD = 1


def make_split(lengths: list[int] | np.ndarray, labels: list[int] | np.ndarray | None = None) -> TokenizedSplit:
    lengths = np.asarray(lengths, dtype=np.int64)
    # Token ids 10, 11, ... so that no real token equals PAD.
    input_ids = [np.arange(10, 10 + n, dtype=np.int64) + 1000 * row for row, n in enumerate(lengths)]
    if labels is None:
        labels = np.arange(len(lengths)) % 2
    return TokenizedSplit(input_ids=input_ids, labels=np.asarray(labels, dtype=np.int64), lengths=lengths)


@pytest.fixture
def lengths() -> np.ndarray:
    # 2,000 reviews with a long-tailed length distribution, as IMDB has.
    rng = np.random.default_rng(123)
    return np.clip(rng.lognormal(mean=5.0, sigma=0.7, size=2000).astype(np.int64), 5, 512)


def mean_spread(batches: list[np.ndarray], lengths: np.ndarray) -> float:
    return float(np.mean([lengths[b].max() - lengths[b].min() for b in batches]))


# --- epoch_batches ----------------------------------------------------------------------


@pytest.mark.parametrize("group_by_length", [True, False])
def test_epoch_covers_every_index_once(lengths: np.ndarray, group_by_length: bool) -> None:
    batches = epoch_batches(lengths, batch_size=32, seed=0, epoch=0, group_by_length=group_by_length)
    flat = np.concatenate(batches)
    assert len(flat) == len(lengths)
    np.testing.assert_array_equal(np.sort(flat), np.arange(len(lengths)))
    assert len(batches) == -(-len(lengths) // 32)


@pytest.mark.parametrize("group_by_length", [True, False])
def test_epoch_is_deterministic_in_seed_and_epoch(lengths: np.ndarray, group_by_length: bool) -> None:
    def run(seed: int, epoch: int) -> list[np.ndarray]:
        return epoch_batches(lengths, batch_size=16, seed=seed, epoch=epoch, group_by_length=group_by_length)

    first, again = run(3, 1), run(3, 1)
    assert len(first) == len(again)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.concatenate(first), np.concatenate(run(3, 2)))  # another epoch
    assert not np.array_equal(np.concatenate(first), np.concatenate(run(4, 1)))  # another seed


def test_epochs_differ_in_batch_contents(lengths: np.ndarray) -> None:
    epoch0 = epoch_batches(lengths, batch_size=32, seed=0, epoch=0, group_by_length=True)
    epoch1 = epoch_batches(lengths, batch_size=32, seed=0, epoch=1, group_by_length=True)
    sets0 = {frozenset(b.tolist()) for b in epoch0}
    sets1 = {frozenset(b.tolist()) for b in epoch1}
    assert len(sets0 & sets1) < len(sets0) // 10


def test_grouping_by_length_shrinks_padding(lengths: np.ndarray) -> None:
    grouped = epoch_batches(lengths, batch_size=32, seed=0, epoch=0, group_by_length=True)
    plain = epoch_batches(lengths, batch_size=32, seed=0, epoch=0, group_by_length=False)
    grouped_spread = mean_spread(grouped, lengths)
    plain_spread = mean_spread(plain, lengths)
    assert plain_spread > 100  # sanity: random batches mix short and long reviews
    assert grouped_spread < plain_spread / 5
    # Padded tokens summed over the epoch fall the same way.
    padded = lambda bs: sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in bs)  # noqa: E731
    assert padded(grouped) < padded(plain) / 5


def test_grouped_batches_are_shuffled_not_sorted(lengths: np.ndarray) -> None:
    grouped = epoch_batches(lengths, batch_size=32, seed=0, epoch=0, group_by_length=True)
    maxima = np.array([lengths[b].max() for b in grouped])
    # Neither longest-first nor shortest-first across the epoch.
    assert not np.all(np.diff(maxima) <= 0)
    assert not np.all(np.diff(maxima) >= 0)


def test_grouping_stays_within_windows() -> None:
    # Lengths that increase with the index: a global sort would put only the longest
    # rows in one batch; windows of GROUP_WINDOW_BATCHES batches mix the whole range.
    n = 4 * GROUP_WINDOW_BATCHES * 8
    lengths = np.arange(n, dtype=np.int64) + 1
    batches = epoch_batches(lengths, batch_size=8, seed=0, epoch=0, group_by_length=True)
    assert len(batches) == 4 * GROUP_WINDOW_BATCHES
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(n))
    # Within a window the batch is taken from a sorted run: descending within each batch.
    for batch in batches:
        assert np.all(np.diff(lengths[batch]) <= 0)
    # A global sort would give consecutive lengths (spread 7); each window holds a random
    # quarter of the rows, so neighbours in a window lie about 4 apart (spread ~28).
    assert mean_spread(batches, lengths) > 14


def test_last_batch_may_be_short() -> None:
    lengths = np.arange(1, 104, dtype=np.int64)  # 103 rows
    for group_by_length in (True, False):
        batches = epoch_batches(lengths, batch_size=10, seed=1, epoch=0, group_by_length=group_by_length)
        sizes = sorted(len(b) for b in batches)
        assert sizes == [3] + [10] * 10


def test_batch_larger_than_data() -> None:
    lengths = np.array([5, 9, 2], dtype=np.int64)
    batches = epoch_batches(lengths, batch_size=32, seed=0, epoch=0, group_by_length=True)
    assert len(batches) == 1
    np.testing.assert_array_equal(batches[0], [1, 0, 2])  # longest first


# --- token budget -------------------------------------------------------------------------


def padded_tokens(batch: np.ndarray, lengths: np.ndarray, multiple: int) -> int:
    return len(batch) * padded_width(lengths[batch].max(), multiple)


@pytest.mark.parametrize("group_by_length", [True, False])
def test_token_budget_bounds_every_batch(lengths: np.ndarray, group_by_length: bool) -> None:
    batches = epoch_batches(
        lengths,
        batch_size=64,
        seed=0,
        epoch=0,
        group_by_length=group_by_length,
        max_tokens=4096,
        pad_to_multiple_of=8,
    )
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(len(lengths)))
    assert all(len(b) <= 64 for b in batches)
    assert all(padded_tokens(b, lengths, 8) <= 4096 for b in batches)
    # Same (seed, epoch), same batches: a resumed run replays them.
    again = epoch_batches(
        lengths,
        batch_size=64,
        seed=0,
        epoch=0,
        group_by_length=group_by_length,
        max_tokens=4096,
        pad_to_multiple_of=8,
    )
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))


def test_token_budget_grows_short_batches_and_shrinks_long_ones(lengths: np.ndarray) -> None:
    batches = epoch_batches(
        lengths, batch_size=64, seed=0, epoch=0, group_by_length=True, max_tokens=4096, pad_to_multiple_of=8
    )
    widths = np.array([padded_width(lengths[b].max(), 8) for b in batches])
    sizes = np.array([len(b) for b in batches])
    assert sizes[widths <= 64].min() >= 50  # short reviews: (nearly) full batches of 64
    assert sizes[widths == 512].max() == 8  # the longest: 4096 / 512
    # Grouped batches are cut close to the budget (only a window's last batch is not).
    full = sum(padded_tokens(b, lengths, 8) > 0.75 * 4096 or len(b) == 64 for b in batches)
    assert full >= len(batches) - -(-len(lengths) // (64 * GROUP_WINDOW_BATCHES)) - 2


def test_no_token_budget_keeps_fixed_batches(lengths: np.ndarray) -> None:
    fixed = epoch_batches(lengths, batch_size=32, seed=5, epoch=2, group_by_length=True)
    generous = epoch_batches(
        lengths, batch_size=32, seed=5, epoch=2, group_by_length=True, max_tokens=32 * 512, pad_to_multiple_of=8
    )
    assert all(np.array_equal(a, b) for a, b in zip(fixed, generous, strict=True))


def test_review_wider_than_the_budget_is_an_error() -> None:
    with pytest.raises(ValueError, match="exceeds max_tokens = 64"):
        epoch_batches(
            np.array([10, 70, 3]),
            batch_size=4,
            seed=0,
            epoch=0,
            group_by_length=True,
            max_tokens=64,
            pad_to_multiple_of=8,
        )


# --- buckets -------------------------------------------------------------------------------


def bucketed(lengths: np.ndarray, *, seed: int = 0, epoch: int = 0, max_tokens: int | None = 4096) -> list[np.ndarray]:
    return epoch_batches(
        lengths,
        batch_size=64,
        seed=seed,
        epoch=epoch,
        group_by_length=True,
        max_tokens=max_tokens,
        pad_to_multiple_of=8,
        bucket_width=32,
    )


def test_buckets_give_each_width_one_review_count(lengths: np.ndarray) -> None:
    batches = bucketed(lengths)
    np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(len(lengths)))
    widths = np.array([padded_width(lengths[b].max(), 32) for b in batches])
    assert set(widths.tolist()) <= set(range(32, 513, 32))
    for width in set(widths.tolist()):
        sizes = sorted(len(b) for b, w in zip(batches, widths) if w == width)
        rows = bucket_rows(width, batch_size=64, max_tokens=4096)
        assert rows == min(64, 4096 // width)
        assert sizes[1:] == [rows] * (len(sizes) - 1) and 1 <= sizes[0] <= rows  # only one short batch per width
        # A batch holds only reviews of its bucket: none would fit a narrower one.
        for b, w in zip(batches, widths):
            if w == width:
                assert lengths[b].min() > width - 32
    assert all(padded_tokens(b, lengths, 32) <= 4096 for b in batches)


def test_buckets_are_shuffled_and_deterministic(lengths: np.ndarray) -> None:
    first, again, other = bucketed(lengths, epoch=1), bucketed(lengths, epoch=1), bucketed(lengths, epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert {frozenset(b.tolist()) for b in first} != {frozenset(b.tolist()) for b in other}
    maxima = np.array([lengths[b].max() for b in first])
    assert not np.all(np.diff(maxima) <= 0) and not np.all(np.diff(maxima) >= 0)


def test_buckets_without_a_budget_hold_batch_size_reviews(lengths: np.ndarray) -> None:
    batches = bucketed(lengths, max_tokens=None)
    assert max(len(b) for b in batches) == 64
    assert sum(len(b) < 64 for b in batches) <= 512 // 32  # one short batch per width at most


def test_bucketed_collate_tops_batches_up_to_one_shape() -> None:
    split = make_split([30, 40, 50, 200], labels=[1, 0, 1, 1])
    batching = TrainBatching(batch_size=64, max_tokens=256, group_by_length=True, pad_to_multiple_of=8, bucket_width=32)
    batch = batching.collate(split, np.array([1, 2]), pad_token_id=PAD)  # width 64: 256 // 64 = 4 rows
    assert batch["input_ids"].shape == (4, 64) and batching.rows(split.lengths, np.array([1, 2])) == 4
    assert batch["labels"].tolist() == [0, 1, IGNORED_LABEL, IGNORED_LABEL]
    # Filler rows attend to one pad token (a row attending to nothing would make attention NaN).
    assert batch["attention_mask"][2:].sum(dim=1).tolist() == [1, 1]
    assert batch["input_ids"][2:].eq(PAD).all()
    assert batch["attention_mask"][:2].sum(dim=1).tolist() == [40, 50]
    assert batching.collate(split, np.array([3]), pad_token_id=PAD)["input_ids"].shape == (1, 224)
    with pytest.raises(ValueError, match="rows = 1 cannot hold a batch of 2 reviews"):
        collate(split, np.array([0, 1]), pad_token_id=PAD, pad_to_multiple_of=8, rows=1)


def test_filler_rows_change_neither_loss_nor_gradients(tiny_roberta) -> None:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_roberta), attn_implementation="sdpa").eval()
    split = make_split([20, 25, 31], labels=[1, 0, 1])
    split = TokenizedSplit(
        input_ids=[ids % 900 + 5 for ids in split.input_ids], labels=split.labels, lengths=split.lengths
    )
    outcomes = []
    for rows in (None, 8):
        model.zero_grad()
        batch = collate(split, np.arange(3), pad_token_id=PAD, pad_to_multiple_of=32, rows=rows)
        loss = model(**batch).loss
        loss.backward()
        outcomes.append((loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (plain_loss, plain_grads), (filled_loss, filled_grads) = outcomes
    assert filled_loss == pytest.approx(plain_loss, rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain_grads, filled_grads, strict=True))


# --- eval_batches -------------------------------------------------------------------------


def test_eval_batches_sorted_by_length_descending() -> None:
    lengths = np.array([5, 40, 12, 40, 7, 33, 1, 20, 20, 9], dtype=np.int64)
    batches = eval_batches(lengths, batch_size=4)
    assert [len(b) for b in batches] == [4, 4, 2]
    flat = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(flat), np.arange(len(lengths)))
    assert np.all(np.diff(lengths[flat]) <= 0)
    # Stable: equal lengths keep their index order.
    np.testing.assert_array_equal(flat, [1, 3, 5, 7, 8, 2, 9, 4, 0, 6])


def test_eval_batches_respect_the_token_budget(lengths: np.ndarray) -> None:
    batches = eval_batches(lengths, batch_size=256, max_tokens=4096, pad_to_multiple_of=8)
    flat = np.concatenate(batches)
    np.testing.assert_array_equal(np.sort(flat), np.arange(len(lengths)))
    assert np.all(np.diff(lengths[flat]) <= 0)  # still one length-sorted pass
    assert all(len(b) <= 256 and padded_tokens(b, lengths, 8) <= 4096 for b in batches)
    assert len(batches[0]) == 8  # the longest first: 8 x 512
    assert max(len(b) for b in batches) > 64  # short reviews, many to a batch


# --- collate ------------------------------------------------------------------------------


def test_collate_pads_to_multiple_of_eight() -> None:
    split = make_split([3, 13, 8, 1], labels=[1, 0, 1, 0])
    batch = collate(split, np.array([0, 1, 3]), pad_token_id=PAD, pad_to_multiple_of=8)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (3, 16)  # longest 13 -> 16
    assert batch["attention_mask"].shape == (3, 16)
    assert batch["input_ids"].dtype == torch.int64
    assert batch["attention_mask"].dtype == torch.int64
    assert batch["labels"].tolist() == [1, 0, 0]
    for row, index in enumerate([0, 1, 3]):
        ids = split.input_ids[index]
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids.tolist()
        assert batch["input_ids"][row, n:].tolist() == [PAD] * (16 - n)
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (16 - n)
    assert int(batch["attention_mask"].sum()) == 3 + 13 + 1


def test_collate_exact_multiple_is_not_padded_further() -> None:
    split = make_split([8, 2])
    batch = collate(split, np.array([1, 0]), pad_token_id=PAD, pad_to_multiple_of=8)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"][1].tolist() == [1] * 8
    assert batch["labels"].tolist() == [1, 0]


def test_collate_other_multiple_and_pad_id() -> None:
    split = make_split([5, 3])
    batch = collate(split, np.array([0, 1]), pad_token_id=0, pad_to_multiple_of=1)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["input_ids"][1, 3:].tolist() == [0, 0]
    batch = collate(split, np.array([0, 1]), pad_token_id=7, pad_to_multiple_of=64)
    assert batch["input_ids"].shape == (2, 64)
    assert batch["input_ids"][0, 5:].eq(7).all()
