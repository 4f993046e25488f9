"""Inference over a tokenized split: what validation (inside training) and the evaluate job share."""

from __future__ import annotations

import numpy as np
import torch

from ftcompare.batching import TokenizedSplit, collate, eval_batches
from ftcompare.models import Precision
from ftcompare.steps import autocast


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
) -> np.ndarray:
    """Logits for every row of `split`, in the split's order (batches sorted by length).

    `max_tokens` caps each batch's padded tokens as in training. Validation passes the
    run's budget: it runs inside the training process, and an inference batch of
    256 x 512 tokens would otherwise set the peak memory of a run whose training batches
    are far smaller (QLoRA's). The evaluate job, a process of its own, does not."""
    was_training = model.training
    model.eval()
    pieces: list[tuple[np.ndarray, torch.Tensor]] = []
    batches = eval_batches(
        split.lengths, batch_size=batch_size, max_tokens=max_tokens, pad_to_multiple_of=pad_to_multiple_of
    )
    for indices in batches:
        batch = collate(split, indices, pad_token_id=pad_token_id, pad_to_multiple_of=pad_to_multiple_of)
        with autocast(device, precision):
            logits = model(
                input_ids=batch["input_ids"].to(device, non_blocking=True),
                attention_mask=batch["attention_mask"].to(device, non_blocking=True),
            ).logits
        pieces.append((indices, logits.float()))  # stays on the device: one copy at the end
    model.train(was_training)
    num_labels = pieces[0][1].shape[-1]
    out = np.empty((len(split), num_labels), dtype=np.float32)
    for indices, logits in pieces:
        out[indices] = logits.cpu().numpy()
    return out


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())
