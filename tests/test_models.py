"""Tests for ftcompare.models: the strategies' models, their parameters and precision."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from specs import CPU, make_spec

from ftcompare.models import _recompute_activations, build_model, count_parameters, resolve_precision

HEAD_PARAMS = (32 * 32 + 32) + (32 * 2 + 2)  # RobertaClassificationHead: dense + out_proj


def built(model_path: Path, strategy: str) -> torch.nn.Module:
    spec = make_spec(model_path, strategy)
    precision = resolve_precision(requested="auto", method=spec.method, device=CPU)
    torch.manual_seed(0)
    return build_model(spec=spec, num_labels=2, device=CPU, precision=precision)


def test_trainable_parameters_match_hand_counts(tiny_roberta):
    full_trainable, full_total = count_parameters(built(tiny_roberta, "full"))
    assert full_trainable == full_total

    # LoRA r=8 on query and value: A (8x32) + B (32x8) per module, 2 modules x 2 layers.
    lora_trainable, lora_total = count_parameters(built(tiny_roberta, "lora"))
    assert lora_trainable == 2 * 2 * (8 * 32 + 32 * 8) + HEAD_PARAMS
    # PEFT keeps the original head beside its trainable copy.
    assert lora_total == full_total + lora_trainable

    # IA3: one vector per target: key, value (out 32) and both output.dense layers,
    # scaled on their input as feed-forward modules (attention out: 32, FFN out: 64).
    ia3_trainable, _ = count_parameters(built(tiny_roberta, "ia3"))
    assert ia3_trainable == 2 * (32 + 32 + 32 + 64) + HEAD_PARAMS


def test_qlora_quantises_the_base_but_not_the_head(tiny_roberta):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    model = built(tiny_roberta, "qlora")
    trainable, total = count_parameters(model)
    lora_trainable, lora_total = count_parameters(built(tiny_roberta, "lora"))
    assert (trainable, total) == (lora_trainable, lora_total)  # 4-bit counted at logical size
    linear4bit = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert any("query" in n for n in linear4bit)
    assert not any("classifier" in n for n in linear4bit)


def saved_activation_bytes(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """Bytes autograd keeps for the backward pass of one training forward (outside any
    checkpointed region: inside one, checkpointing keeps nothing but the layer input)."""
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, torch.nn.Parameter):  # weights are held anyway
            seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(**batch).loss.backward()
    return sum(seen.values())


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_gradient_checkpointing_saves_activations_not_results(tiny_roberta, strategy):
    spec = make_spec(tiny_roberta, strategy)
    checkpointed = dataclasses.replace(spec, gradient_checkpointing=True)
    precision = resolve_precision(requested="auto", method=spec.method, device=CPU)
    torch.manual_seed(0)
    batch = {
        "input_ids": torch.randint(5, 900, (8, 64)),
        "attention_mask": torch.ones(8, 64, dtype=torch.int64),
        "labels": torch.arange(8) % 2,
    }
    models = {}
    for name, run_spec in (("plain", spec), ("checkpointed", checkpointed)):
        torch.manual_seed(0)
        models[name] = build_model(spec=run_spec, num_labels=2, device=CPU, precision=precision)
    assert any(getattr(m, "gradient_checkpointing", False) for m in models["checkpointed"].modules())
    assert not any(getattr(m, "gradient_checkpointing", False) for m in models["plain"].modules())

    plain_bytes = saved_activation_bytes(models["plain"], batch)
    checkpointed_bytes = saved_activation_bytes(models["checkpointed"], batch)
    assert checkpointed_bytes < plain_bytes / 3, (plain_bytes, checkpointed_bytes)


def test_gradient_checkpointing_on_transformers_5_17():
    # 5.17 (the GPU image's) has only the older method; 5.24 (here) has both names.
    calls = []

    class Older:
        def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
            calls.append(gradient_checkpointing_kwargs)

    _recompute_activations(Older())
    assert calls == [{"use_reentrant": False}]
