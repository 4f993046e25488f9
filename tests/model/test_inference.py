"""Tests for ftcompare.model.inference: batched prediction in the split's order, and single-review latency."""

from __future__ import annotations

import types

import numpy as np
import torch
from specs import CPU

from ftcompare.data import TokenizedSplit
from ftcompare.model import Precision, latency_sample, predict_logits, review_latencies

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


# --- sentence pairs: segment ids (issue 19) ---------------------------------------------------


def pairs_of(n: int = 24) -> tuple[list[str], list[str]]:
    """Pairs of every relative length (first longer, second longer, both cut at 40 tokens)."""
    import pandas as pd
    from conftest import IMDB_SAMPLE

    texts = pd.read_parquet(IMDB_SAMPLE / "train.parquet")["text"].head(2 * n).tolist()
    firsts = [t if i % 3 else " ".join(t.split()[:4]) for i, t in enumerate(texts[:n])]
    seconds = [t if i % 4 else " ".join(t.split()[:6]) for i, t in enumerate(texts[n:])]
    return firsts, seconds


def reference_logits(model, tokenizer, firsts, seconds, *, max_length: int) -> np.ndarray:
    """What plain transformers computes for each pair: model(**tokenizer(a, b)), one at a time."""
    with torch.inference_mode():
        return np.concatenate(
            [
                model(**tokenizer(a, b, truncation="longest_first", max_length=max_length, return_tensors="pt"))
                .logits.float()
                .numpy()
                for a, b in zip(firsts, seconds)
            ]
        )


def test_a_bert_models_pair_logits_are_those_of_its_tokenizers_pair_encoding(minilm_path, tmp_path):
    """MiniLM (BERT, type_vocab_size 2) reads a pair's second text as segment 1: the logits
    validation, the evaluate job and predict compute (predict_logits), those a training
    step computes (bucketed batches with filler rows, as CUDA graphs take them), and those
    of a pair cut to a shorter budget (virtual tokens) all equal model(**tokenizer(a, b))."""
    from specs import tokenized_pairs
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ftcompare.data import TrainBatching, load_tokenized

    firsts, seconds = pairs_of()
    test = load_tokenized(tokenized_pairs(tmp_path, str(minilm_path), firsts, seconds, max_length=64)).splits["test"]
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(minilm_path), num_labels=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path))
    expected = {length: reference_logits(model, tokenizer, firsts, seconds, max_length=length) for length in (64, 40)}
    for length, reference in expected.items():
        split = test if length == 64 else test.truncated(length)
        got = predict_logits(
            model, split, batch_size=8, pad_token_id=0, pad_to_multiple_of=8, device=CPU, precision=FP32
        )
        np.testing.assert_allclose(got, reference, atol=1e-5, err_msg=f"max_length {length}")
    batching = TrainBatching(
        batch_size=8, max_tokens=None, group_by_length=False, pad_to_multiple_of=8, bucket_width=16
    )
    for indices in batching.epoch(test.lengths, seed=0, epoch=0):
        batch = batching.collate(test, indices, pad_token_id=0)
        assert batch["token_type_ids"].shape == batch["input_ids"].shape
        with torch.inference_mode():
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.numpy()
        np.testing.assert_allclose(logits[: len(indices)], expected[64][indices], atol=1e-5)


def test_single_texts_and_roberta_pairs_get_no_segment_ids(minilm_path, tiny_roberta, tmp_path):
    """Batches as before segment ids existed: a single text (BERT's default segment 0 is
    its segment) and a RoBERTa pair (type_vocab_size 1: nothing to tell apart)."""
    from specs import tokenized_pairs

    from ftcompare.data import TokenizedSplit, collate, load_tokenized

    firsts, seconds = pairs_of(8)
    roberta = load_tokenized(tokenized_pairs(tmp_path, str(tiny_roberta), firsts, seconds)).splits["test"]
    assert roberta.pair_tokens is not None and roberta.pair_types is None
    single = TokenizedSplit(
        input_ids=[np.arange(5), np.arange(9)], labels=np.zeros(2, dtype=np.int64), lengths=np.array([5, 9])
    )
    for split in (roberta, single):
        batch = collate(split, np.arange(len(split)), pad_token_id=1, pad_to_multiple_of=8)
        assert set(batch) == {"input_ids", "attention_mask", "labels"}
