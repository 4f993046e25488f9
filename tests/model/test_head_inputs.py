"""bench/head_inputs.py: the head's inputs come back in the split's order, and its two
figures tell a constant input from a separable one."""

from __future__ import annotations

import sys
import types

import numpy as np
import torch
from workflow_runs import REPO_ROOT

from ftcompare.data import TokenizedSplit

sys.path.insert(0, str(REPO_ROOT / "bench"))
import head_inputs  # noqa: E402


class Recorder(torch.nn.Module):
    """A classifier whose head reads (first token id, number of real tokens)."""

    def __init__(self) -> None:
        super().__init__()
        self.classifier = torch.nn.Linear(2, 2)

    def forward(self, input_ids, attention_mask):
        features = torch.stack([input_ids[:, 0].float(), attention_mask.sum(dim=1).float()], dim=1)
        return types.SimpleNamespace(logits=self.classifier(features))


def test_head_inputs_come_back_in_the_splits_order():
    lengths = [5, 40, 12, 33, 7, 21]
    split = TokenizedSplit(
        input_ids=[np.arange(100 + i, 100 + i + n) for i, n in enumerate(lengths)],
        labels=np.zeros(len(lengths), dtype=np.int64),
        lengths=np.array(lengths),
    )
    features = head_inputs.head_inputs(
        Recorder(), split, batch_size=2, max_tokens=None, pad_token_id=0, pad_to_multiple_of=8
    )
    assert features.tolist() == [[100.0 + i, float(n)] for i, n in enumerate(lengths)]
    first = head_inputs.first_rows(split, 2)
    assert first.lengths.tolist() == [5, 40] and len(first.input_ids) == len(first.labels) == 2


def test_a_constant_input_is_cosine_one_and_a_separable_one_probes_perfectly():
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 2
    constant = np.ones((200, 8)) + 1e-9 * rng.normal(size=(200, 8))
    figures = head_inputs.describe(constant[:100], labels[:100], constant[100:], labels[100:])
    assert figures["cosine"] > 0.999 and figures["probe"] < 0.7
    separable = rng.normal(size=(200, 8))
    separable[:, 0] += 4.0 * (2 * labels - 1)
    figures = head_inputs.describe(separable[:100], labels[:100], separable[100:], labels[100:])
    assert figures["cosine"] < 0.5 and figures["probe"] == 1.0
