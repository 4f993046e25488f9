"""A RoBERTa with random weights, saved for `from_pretrained`: what the bench scripts train
without network. roberta-base's exact shape unless a script asks for a smaller one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# RobertaConfig()'s defaults are roberta-base's (12 layers, width 768, 50,265 tokens)
# except these: 514 positions (512 would allow only 510 tokens with RoBERTa's position
# offset), one token type and its LayerNorm epsilon.
ROBERTA_BASE = {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-5}
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "classifier_dropout": 0.0}


def write_random_roberta(directory: Path, *, num_labels: int = 2, seed: int = 0, **changes: Any) -> Any:
    """Save a random roberta-base (with `changes` to its config, e.g. a smaller width)
    into `directory`; returns its RobertaConfig."""
    import torch
    import transformers
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(**{**ROBERTA_BASE, **changes}, num_labels=num_labels)
    torch.manual_seed(seed)
    transformers.utils.logging.disable_progress_bar()  # a "Loading weights" bar per load is noise
    Path(directory).mkdir(parents=True, exist_ok=True)
    RobertaForSequenceClassification(config).save_pretrained(str(directory))
    return config
