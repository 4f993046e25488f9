"""Tests for ftcompare.inference: batched prediction in the split's order, and single-review latency."""

from __future__ import annotations

import types

import numpy as np
import torch
from specs import CPU

from ftcompare.batching import TokenizedSplit
from ftcompare.inference import latency_sample, predict_logits, review_latencies
from ftcompare.models import Precision

FP32 = Precision(autocast_dtype=None, base_dtype=torch.float32)


class Recorder(torch.nn.Module):
    """A classifier whose logits are (first token id, number of real tokens), recording each batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[int, int]] = []

    def forward(self, input_ids, attention_mask):
        self.batches.append(tuple(input_ids.shape))
        logits = torch.stack([input_ids[:, 0].float(), attention_mask.sum(dim=1).float()], dim=1)
        return types.SimpleNamespace(logits=logits)


def split_of(lengths: list[int]) -> TokenizedSplit:
    return TokenizedSplit(
        input_ids=[np.arange(100 + i, 100 + i + n) for i, n in enumerate(lengths)],
        labels=np.zeros(len(lengths), dtype=np.int64),
        lengths=np.array(lengths),
    )


def test_predictions_come_back_in_the_splits_order_from_length_sorted_batches():
    lengths = [5, 40, 12, 33, 7, 21]
    model = Recorder()
    logits = predict_logits(
        model, split_of(lengths), batch_size=2, pad_token_id=0, pad_to_multiple_of=8, device=CPU, precision=FP32
    )
    assert logits[:, 0].tolist() == [100 + i for i in range(len(lengths))]
    assert logits[:, 1].tolist() == lengths
    assert model.batches == [(2, 40), (2, 24), (2, 8)]  # longest first, padded to multiples of 8


def test_the_latency_sample_is_fixed_distinct_and_at_most_the_split():
    first, again = latency_sample(1000), latency_sample(1000)
    assert first.tolist() == again.tolist() and len(set(first.tolist())) == 100
    assert first.tolist() == sorted(first.tolist()) and first.max() < 1000
    assert latency_sample(30).tolist() == list(range(30))


def test_each_review_is_timed_alone_after_an_untimed_warm_up():
    model = Recorder()
    split = split_of([5, 40, 12, 33, 7, 21])
    seconds = review_latencies(
        model, split, np.array([1, 3, 5]), pad_token_id=0, pad_to_multiple_of=8, device=CPU, precision=FP32, warmup=2
    )
    assert len(seconds) == 3 and (seconds > 0).all()
    assert model.batches == [(1, 40), (1, 40), (1, 40), (1, 40), (1, 24)]  # 2 warm-up, then 3 timed
