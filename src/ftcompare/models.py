"""Model sources and the fine-tuning strategies (full, LoRA, QLoRA, IA3).

A strategy is data (config `strategies.<name>`); `build_model` turns one into a module
ready to train. Precision policy, decided once here:
- full fine-tuning keeps fp32 master weights and trains under bf16 autocast on GPUs
  that support it (bf16 weights would lose small updates);
- adapter strategies hold the frozen base in bf16 on such GPUs (half the memory and
  bandwidth, and it is never updated), and their trainable weights in fp32;
- QLoRA holds the base in 4-bit NF4 (bitsandbytes) and keeps the classification head
  out of quantisation: a quantised head cannot be trained;
- on CPU everything is fp32.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from ftcompare.config import METHODS, RunSpec
from ftcompare.sources import check_module_lists, resolve_model_path


class StrategyUnavailable(RuntimeError):
    """The strategy cannot run on this machine (e.g. no bitsandbytes backend); not a bug."""


def module_names(name_or_path: str) -> list[str]:
    """Every module name of the sequence classifier built from a model, the head included,
    as PEFT sees them; built on the meta device, so no weights are read or allocated."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(resolve_model_path(name_or_path))
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    return [name for name, _ in model.named_modules()]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Precision:
    """How one run computes: autocast dtype and the dtype of the frozen base weights."""

    autocast_dtype: torch.dtype | None  # None: plain fp32
    base_dtype: torch.dtype

    @property
    def name(self) -> str:
        return "bf16" if self.autocast_dtype == torch.bfloat16 else "fp32"


def resolve_precision(*, requested: str, method: str, device: torch.device) -> Precision:
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if requested == "bf16" and not bf16_ok:
        raise ValueError(f"training.precision = 'bf16' but {device} does not support bf16; use 'auto' or 'fp32'")
    use_bf16 = requested == "bf16" or (requested == "auto" and bf16_ok)
    if not use_bf16:
        return Precision(autocast_dtype=None, base_dtype=torch.float32)
    base = torch.float32 if method == "full" else torch.bfloat16
    return Precision(autocast_dtype=torch.bfloat16, base_dtype=base)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count at their logical size."""
    trainable = total = 0
    for param in model.parameters():
        quant_state = getattr(param, "quant_state", None)
        numel = math.prod(quant_state.shape) if quant_state is not None else param.numel()
        total += numel
        if param.requires_grad:
            trainable += numel
    return trainable, total


def _quantization_config(settings: dict[str, Any], *, device: torch.device):
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # ImportError, or a broken native library
        raise StrategyUnavailable(f"bitsandbytes cannot be imported here: {exc}") from exc
    from transformers import BitsAndBytesConfig

    # bf16 compute needs a GPU; bitsandbytes' CPU backend computes in fp32.
    compute = getattr(torch, settings["compute_dtype"]) if device.type == "cuda" else torch.float32
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=settings["quant_type"],
        bnb_4bit_use_double_quant=settings["double_quant"],
        bnb_4bit_compute_dtype=compute,
        llm_int8_skip_modules=["classifier"],  # the head must stay trainable
    )


def peft_config(spec: RunSpec):
    from peft import IA3Config, LoraConfig, TaskType

    if spec.method in ("lora", "qlora"):
        lora = spec.lora or {}
        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=list(lora["target_modules"]),
        )
    ia3 = spec.ia3 or {}
    return IA3Config(
        task_type=TaskType.SEQ_CLS,
        target_modules=list(ia3["target_modules"]),
        feedforward_modules=list(ia3["feedforward_modules"]),
    )


def load_base_model(
    *, spec: RunSpec, num_labels: int, device: torch.device, precision: Precision, source: str | None = None
) -> torch.nn.Module:
    """The pretrained encoder with a fresh classification head, on `device`."""
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {
        "num_labels": num_labels,
        "dtype": precision.base_dtype,
        "attn_implementation": "sdpa",
    }
    if spec.method == "qlora":
        kwargs["quantization_config"] = _quantization_config(spec.quantization or {}, device=device)
        kwargs["device_map"] = {"": device}  # bitsandbytes quantises while loading onto the device
    source = source or resolve_model_path(spec.model_name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
    if spec.method != "qlora":
        model.to(device)
    elif device.type == "cpu":
        _no_cpu_4bit_repacking(model)
    return model


def build_model(*, spec: RunSpec, num_labels: int, device: torch.device, precision: Precision) -> torch.nn.Module:
    """The model of one strategy, ready to train: only the strategy's parameters require grad."""
    if spec.method not in METHODS:
        raise ValueError(f"unknown method {spec.method!r}; allowed: {', '.join(METHODS)}")
    model = load_base_model(spec=spec, num_labels=num_labels, device=device, precision=precision)
    if spec.gradient_checkpointing:
        _recompute_activations(model)
    if spec.method == "full":
        return model
    from peft import get_peft_model

    # Before any training: PEFT itself drops an entry that matches nothing as long as
    # another one matches (preflight checks the same for local models).
    check_module_lists(
        {spec.strategy: {"lora": spec.lora, "ia3": spec.ia3}},
        [name for name, _ in model.named_modules()],
        model=spec.model_name_or_path,
    )
    # No prepare_model_for_kbit_training for QLoRA: it upcasts every non-quantised
    # weight to fp32, a cost an encoder this size does not need (the fp32 cast of the
    # trainable weights below is the part that matters), and turns on gradient
    # checkpointing, which is the config's choice here (`gradient_checkpointing`).
    model = get_peft_model(model, peft_config(spec))
    _trainable_to_fp32(model)
    return model


def _recompute_activations(model: torch.nn.Module) -> None:
    """Gradient checkpointing: keep each layer's input, recompute its activations in the
    backward pass. One more forward per step for a fraction of the activation memory."""
    # Non-reentrant: works when no input requires grad (a frozen base) and replays dropout.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.24 has this name, 5.17 only the older one
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers 5.17 (this project's GPU image)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _no_cpu_4bit_repacking(model: torch.nn.Module) -> None:
    # bitsandbytes' CPU backend repacks a 4-bit weight for fast inference the first time
    # its layer runs in eval mode; the repacked layout then fails the next training step
    # ("a view of a leaf Variable ... in-place operation") and fails outright on small
    # layers ("shape '[32, 0]' is invalid"). Keep the plain layout.
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _trainable_to_fp32(model: torch.nn.Module) -> None:
    # Adam updates on bf16 weights round away small steps; the head copy PEFT makes
    # (modules_to_save) inherits the base dtype, so cast every trainable tensor.
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def id2label(label_names: list[str] | None, num_labels: int) -> dict[int, str]:
    """Label k's name for a model config: the data's class names, or where it has none the
    numbers as text ("0", "1"), which `ftcompare predict` writes back as integers."""
    return dict(enumerate(label_names or [str(k) for k in range(num_labels)]))


def save_trained(
    model: torch.nn.Module,
    *,
    out_dir: Path,
    label_names: list[str] | None,
    tokenizer_source: str,
    max_length: int,
    base_model: str,
) -> float:
    """Save a trained model so that its folder loads alone: the weights (full model, or
    adapter + head), config.json with id2label / label2id (for an adapter, the config of
    the model it makes: transformers' config of its base, which PEFT does not save), and
    the tokenizer of `tokenizer_source` truncating at the run's `max_length`. An adapter
    names its base `base_model` (see sources.portable_model_name).

    Returns the size of the saved weights in MB (what the method costs to store: the
    tokenizer and the config are not counted)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = transformers_model(model).config
    config.id2label = id2label(label_names, config.num_labels)
    config.label2id = {name: k for k, name in config.id2label.items()}
    for adapter in getattr(model, "peft_config", {}).values():
        adapter.base_model_name_or_path = base_model
    model.save_pretrained(str(out_dir))
    size_mb = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file()) / 1e6
    if transformers_model(model) is not model:
        config.architectures = [type(transformers_model(model)).__name__]
        config.save_pretrained(str(out_dir))
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(tokenizer_source), model_max_length=max_length)
    tokenizer.save_pretrained(str(out_dir))
    return size_mb


def transformers_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model: `model` itself, or the one a PEFT model wraps."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def load_trained(
    *, spec: RunSpec, model_dir: Path, num_labels: int, device: torch.device, precision: Precision
) -> torch.nn.Module:
    """The fine-tuned model saved by `save_trained`, rebuilt the way it was trained."""
    if spec.method == "full":
        model = load_base_model(
            spec=spec, num_labels=num_labels, device=device, precision=precision, source=str(model_dir)
        )
    else:
        from peft import PeftModel

        base = load_base_model(spec=spec, num_labels=num_labels, device=device, precision=precision)
        model = PeftModel.from_pretrained(base, str(model_dir))
    model.eval()
    return model


def _trained_copies_in_place(model: torch.nn.Module) -> None:
    """Put the trained copy of each module PEFT trains whole (modules_to_save: the
    classification head) where the wrapper holding it and the original is. merge_and_unload
    does this itself for LoRA, but for IA3 (PEFT 0.21) it fails on a head that is not one
    layer, such as RoBERTa's (dense + out_proj): it reads the head's `.weight`."""
    from peft.utils.other import ModulesToSaveWrapper

    for name, module in list(model.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, attribute = name.rpartition(".")
            trained = module.unload_and_optionally_merge_module(merge=False, safe_merge=False, adapter_names=None)
            setattr(model.get_submodule(parent), attribute, trained)


class NotMergeable(ValueError):
    """The run has no adapter whose weights can be merged into its base model."""


def load_merged(
    *, spec: RunSpec, model_dir: Path, num_labels: int, device: torch.device, precision: Precision
) -> torch.nn.Module:
    """The trained adapter merged into its base weights (PEFT's merge_and_unload): a plain
    transformers model, the trained head in place of the base's, that predicts as the
    adapter does (to float tolerance) and runs at the base model's cost.

    QLoRA: the 4-bit base is dequantised before the adapter is merged into it. Merging
    into the 4-bit weights would quantise W + BA again and lose most of the update; the
    dequantised weights are exactly those the 4-bit layers compute with, so the merged
    model keeps the QLoRA model's predictions, in a full-size model without bitsandbytes."""
    if spec.method == "full":
        raise NotMergeable("full fine-tuning trains the model itself: its folder already holds a plain model")
    from peft import PeftModel

    base = load_base_model(spec=spec, num_labels=num_labels, device=device, precision=precision)
    if getattr(base, "hf_quantizer", None) is not None:
        base = base.dequantize()
    model = PeftModel.from_pretrained(base, str(model_dir))
    if not hasattr(model.base_model, "merge_and_unload"):  # e.g. prompt learning: no weights to merge into
        raise NotMergeable(f"{spec.method} adds no weights that merge into the base model's")
    _trained_copies_in_place(model)
    merged = model.merge_and_unload()
    merged.eval()
    return merged
