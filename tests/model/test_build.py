"""Tests for ftcompare.model.build: the strategies' models, their parameters and precision."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from specs import CPU, make_spec

from ftcompare.model import build as models
from ftcompare.model import build_model, count_parameters, resolve_precision
from ftcompare.model.build import _recompute_activations

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


def trained(model_path: Path, strategy: str, out_dir: Path, label_names=("neg", "pos")):
    """A model of `strategy` whose trainable weights moved away from their start (LoRA's B
    starts at zero), saved as a run saves it; returns its spec."""
    spec = make_spec(model_path, strategy)
    model = built(model_path, strategy)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.5 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    models.save_trained(
        model,
        out_dir=out_dir,
        label_names=None if label_names is None else list(label_names),
        tokenizer_source=str(model_path),
        max_length=spec.max_length,
        base_model=str(model_path),
    )
    return spec


def reviews_batch(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    texts = ["A moving, beautifully acted film. " * 20, "Dull and far too long.", "It was fine, I suppose."]
    return dict(tokenizer(texts, truncation=True, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_a_saved_run_folder_holds_its_tokenizer_labels_and_base(tiny_roberta, tmp_path, strategy):
    from transformers import AutoConfig

    out = tmp_path / "model"
    trained(tiny_roberta, strategy, out)
    config = AutoConfig.from_pretrained(str(out))
    assert config.id2label == {0: "neg", 1: "pos"} and config.label2id == {"neg": 0, "pos": 1}
    assert config.architectures == ["RobertaForSequenceClassification"]
    batch = reviews_batch(out)
    assert batch["input_ids"].shape[1] == 64  # truncated at the run's max_length, as the study tokenized
    weights = out / ("model.safetensors" if strategy == "full" else "adapter_model.safetensors")
    assert weights.is_file()
    if strategy == "lora":
        adapter = json.loads((out / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == str(tiny_roberta)


def test_unnamed_classes_are_named_by_their_numbers(tiny_roberta, tmp_path):
    trained(tiny_roberta, "full", tmp_path / "model", label_names=None)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1"} and config["label2id"] == {"0": 0, "1": 1}


def test_the_saved_size_counts_the_weights_not_the_tokenizer(tiny_roberta, tmp_path):
    out = tmp_path / "model"
    size = models.save_trained(
        built(tiny_roberta, "lora"),
        out_dir=out,
        label_names=None,
        tokenizer_source=str(tiny_roberta),
        max_length=64,
        base_model=str(tiny_roberta),
    )
    added = {"config.json", "tokenizer.json", "tokenizer_config.json"}  # what makes the folder load alone
    assert added <= {path.name for path in out.iterdir()}
    assert size * 1e6 == sum(path.stat().st_size for path in out.iterdir() if path.name not in added)


@pytest.mark.parametrize("strategy", ["lora", "ia3", "qlora"])
def test_a_merged_adapter_predicts_as_the_adapter(tiny_roberta, tmp_path, strategy):
    if strategy == "qlora":
        pytest.importorskip("bitsandbytes")
    out = tmp_path / "model"
    spec = trained(tiny_roberta, strategy, out)
    precision = resolve_precision(requested="auto", method=spec.method, device=CPU)
    adapter = models.load_trained(spec=spec, model_dir=out, num_labels=2, device=CPU, precision=precision)
    merged = models.load_merged(spec=spec, model_dir=out, num_labels=2, device=CPU, precision=precision)
    batch = reviews_batch(out)
    with torch.inference_mode():
        expected, got = adapter(**batch).logits, merged(**batch).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert expected.std() > 0.01  # the heads differ from a constant: the comparison means something
    # A plain transformers model: no PEFT layers, no 4-bit ones.
    assert type(merged).__name__ == "RobertaForSequenceClassification"
    assert not any("lora" in name or "ia3" in name for name, _ in merged.named_modules())
    assert all(type(module).__module__.startswith(("torch", "transformers")) for module in merged.modules())


def test_full_fine_tuning_has_nothing_to_merge(tiny_roberta, tmp_path):
    spec = trained(tiny_roberta, "full", tmp_path / "model")
    precision = resolve_precision(requested="auto", method="full", device=CPU)
    with pytest.raises(models.NotMergeable, match="already holds a plain model"):
        models.load_merged(spec=spec, model_dir=tmp_path / "model", num_labels=2, device=CPU, precision=precision)


def test_a_new_heads_load_report_is_one_line_and_peft_does_not_warn(minilm_path, caplog):
    import logging
    import warnings

    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from ftcompare.model import peft_wrapping
    from ftcompare.model.build import _from_pretrained

    reports: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = reports.append
    transformers_log = logging.getLogger("transformers.modeling_utils")
    transformers_log.addHandler(handler)
    try:
        with (
            caplog.at_level(logging.INFO, logger="ftcompare.model.build"),
            warnings.catch_warnings(record=True) as caught,
        ):
            model = _from_pretrained(AutoModelForSequenceClassification, str(minilm_path), num_labels=2)
            with peft_wrapping():
                get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, target_modules=["query"]))
    finally:
        transformers_log.removeHandler(handler)
    assert not [r for r in reports if "LOAD REPORT" in str(r.msg)]
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    (line,) = [r.getMessage() for r in caplog.records if "classification head" in r.getMessage()]
    assert line == (
        f"{minilm_path}: new classification head (classifier.bias, classifier.weight), randomly initialised as "
        "expected: the run trains it"
    )
