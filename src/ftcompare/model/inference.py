"""Inference over a tokenized split: what validation (inside training), the evaluate job
and `ftcompare predict` share, and single-review latency."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from ftcompare.data import TokenizedSplit, collate, eval_batches
from ftcompare.model.build import Precision
from ftcompare.model.device import autocast


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    split: TokenizedSplit,
    *,
    batch_size: int,
    pad_token_id: int,
    pad_to_multiple_of: int,
    device: torch.device,
    precision: Precision,
    max_tokens: int | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Logits for every row of `split`, in the split's order (batches sorted by length).

    `max_tokens` caps each batch's padded tokens as in training. Validation passes the
    run's budget: it runs inside the training process, and an inference batch of
    256 x 512 tokens would otherwise set the peak memory of a run whose training batches
    are far smaller (QLoRA's). The evaluate job, a process of its own, does not.
    `on_batch(done, total)` after each batch: a job's progress (ftcompare.train.progress)."""
    was_training = model.training
    model.eval()
    pieces: list[tuple[np.ndarray, torch.Tensor]] = []
    batches = eval_batches(
        split.lengths, batch_size=batch_size, max_tokens=max_tokens, pad_to_multiple_of=pad_to_multiple_of
    )
    for done, indices in enumerate(batches, start=1):
        batch = collate(split, indices, pad_token_id=pad_token_id, pad_to_multiple_of=pad_to_multiple_of)
        logits = forward_logits(model, batch, device=device, precision=precision)
        pieces.append((indices, logits))  # stays on the device: one copy at the end
        if on_batch is not None:
            on_batch(done, len(batches))
    model.train(was_training)
    num_labels = pieces[0][1].shape[-1]
    out = np.empty((len(split), num_labels), dtype=np.float32)
    for indices, logits in pieces:
        out[indices] = logits.cpu().numpy()
    return out


def forward_logits(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], *, device: torch.device, precision: Precision
) -> torch.Tensor:
    """One batch's logits (fp32, on the device), under the run's autocast. A pair batch's
    segment ids go in where collate made them (models that read them); labels never do."""
    inputs = {name: batch[name].to(device, non_blocking=True) for name in MODEL_INPUTS if name in batch}
    with autocast(device, precision):
        return model(**inputs).logits.float()


# What a batch feeds the model at inference (token_type_ids: pair batches of BERT-style models).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# Latency is measured on this many test reviews, one at a time: p95 is then the 5th
# slowest of 100, steady enough to compare strategies, and the sample costs about 1 s on
# a GPU and well under a minute for roberta-base on a CPU, next to a test pass over
# thousands of reviews. The first few, timed apart, are left out: they pay for the
# kernels' first launch and the allocator's first requests, not for a review.
LATENCY_REVIEWS = 100
LATENCY_WARMUP = 10


def latency_sample(rows: int, *, size: int = LATENCY_REVIEWS, seed: int = 0) -> np.ndarray:
    """The rows of a split whose latency is measured: fixed by the seed, so every run of a
    study (one test split) is timed on the same reviews."""
    return np.sort(np.random.default_rng(seed).choice(rows, size=min(size, rows), replace=False))


@torch.inference_mode()
def review_latencies(
    model: torch.nn.Module,
    split: TokenizedSplit,
    indices: np.ndarray,
    *,
    pad_token_id: int,
    pad_to_multiple_of: int,
    device: torch.device,
    precision: Precision,
    warmup: int = LATENCY_WARMUP,
) -> np.ndarray:
    """Seconds to predict each review of `indices` on its own: from its token ids on the
    host to its logits back there (a batch of one, padded as evaluation pads), after
    `warmup` untimed reviews."""
    was_training = model.training
    model.eval()

    def one(index: int) -> None:
        batch = collate(split, np.array([index]), pad_token_id=pad_token_id, pad_to_multiple_of=pad_to_multiple_of)
        forward_logits(model, batch, device=device, precision=precision).cpu()  # the copy waits for the GPU

    for index in indices[:warmup]:
        one(index)
    seconds = []
    for index in indices:
        started = time.perf_counter()
        one(index)
        seconds.append(time.perf_counter() - started)
    model.train(was_training)
    return np.array(seconds)


class NonFiniteLogits(ValueError):
    """The model's logits hold NaN or infinity: its probabilities would mean nothing."""


def check_finite(logits: np.ndarray, *, what: str) -> None:
    """NonFiniteLogits unless every logit is finite (`what`: the rows, e.g. "test reviews").
    NaN logits would all be argmax'd to class 0: a prediction that means nothing."""
    if not np.isfinite(logits).all():
        broken = int((~np.isfinite(logits)).any(axis=1).sum())
        raise NonFiniteLogits(f"diverged: the model's logits are not finite for {broken} of {len(logits)} {what}")


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())
