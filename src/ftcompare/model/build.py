"""Model sources and the fine-tuning methods (methods.METHOD_TABLE): full, BitFit and
every PEFT method, named or by its config.

A strategy is data (config `strategies.<name>`); `build_model` turns one into a module
ready to train. Precision policy, decided once here:
- full fine-tuning keeps fp32 master weights and trains under bf16 autocast on GPUs
  that support it (bf16 weights would lose small updates);
- the other methods hold the frozen base in bf16 on such GPUs (half the memory and
  bandwidth, and it is never updated), and their trainable weights in fp32;
- a `quantization` block (QLoRA's, or an adapter's option) holds the base in 4-bit NF4
  (bitsandbytes) and keeps the classification head out of quantisation: a quantised
  head cannot be trained;
- on CPU everything is fp32.

Where PEFT's methods meet an encoder classifier:
- prompt tuning and P-tuning prepend their virtual tokens to the input, so position 0,
  which RoBERTa's head (and BERT's pooler) reads, would be the first virtual token: the
  encoder's output drops the virtual positions before the head, which reads the text's
  <s> / [CLS] as it does for every other method;
- prefix tuning passes its keys and values as a cache, which the encoders of
  transformers 5 take only through the classification model's keyword arguments (PEFT's
  own path looks for a `past_key_values` parameter that 5.24 renamed);
- virtual tokens take positions: `text_length` leaves room for them within the model's
  position limit by reading fewer text tokens where it must;
- AdaLoRA re-allocates its ranks after every optimizer step (`method_step`);
- the classification head that PEFT trains beside every adapter (modules_to_save) is
  counted apart from the method's own weights (`split_trainable`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ftcompare.contract import check_module_lists, max_sequence_length, resolve_model_path
from ftcompare.data import TokenizedSplit
from ftcompare.methods import (
    METHOD_BLOCKS,
    METHODS,
    WHOLE_MODEL_METHODS,
    RunSpec,
    check_default_targets,
    check_model,
    check_widths,
    default_target_checks,
    peft_settings,
    text_budget,
    virtual_tokens,
)

log = logging.getLogger(__name__)


# The classification head's module names: PEFT trains a copy of the first it finds
# beside any adapter (modules_to_save); BitFit trains it whole.
HEAD_MODULES = ("classifier", "score")


@contextlib.contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around PEFT wrapping a model: PEFT 0.21 reads transformers 5's deprecated alias
    `is_gradient_checkpointing` in PeftModel.__init__ (nothing of ours uses it), and every
    job would print its FutureWarning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


class StrategyUnavailable(RuntimeError):
    """The strategy cannot run on this machine (e.g. no bitsandbytes backend); not a bug."""


def module_names(name_or_path: str) -> list[str]:
    """Every module name of the sequence classifier built from a model, the head included,
    as PEFT sees them; built on the meta device, so no weights are read or allocated."""
    return [name for name, _ in _meta_model(name_or_path).named_modules()]


def module_widths(name_or_path: str) -> dict[str, int]:
    """Each Linear module's input width in the sequence classifier built from a model
    (on the meta device, as `module_names`)."""
    return linear_widths(_meta_model(name_or_path))


def _meta_model(name_or_path: str) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(resolve_model_path(name_or_path))
    with torch.device("meta"):
        return AutoModelForSequenceClassification.from_config(config)


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


def _logical_numel(param: torch.nn.Parameter) -> int:
    quant_state = getattr(param, "quant_state", None)
    return math.prod(quant_state.shape) if quant_state is not None else param.numel()


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count at their logical size."""
    trainable = total = 0
    for param in model.parameters():
        numel = _logical_numel(param)
        total += numel
        if param.requires_grad:
            trainable += numel
    return trainable, total


def in_head(name: str) -> bool:
    """Whether a parameter belongs to the classification head (PEFT's trainable copy of it
    included: `...classifier.modules_to_save.default.dense.weight`)."""
    return any(part in HEAD_MODULES for part in name.split("."))


def split_trainable(model: torch.nn.Module) -> tuple[int, int]:
    """(the method's own, the classification head's) trainable parameters: every adapter
    also trains the head, which for roberta-base is 592,130 of LoRA r=8's 887,042."""
    method = head = 0
    for name, param in model.named_parameters():
        if param.requires_grad:
            if in_head(name):
                head += _logical_numel(param)
            else:
                method += _logical_numel(param)
    return method, head


def text_length(spec: RunSpec) -> int:
    """The text tokens a run reads: `max_length`, or fewer where the method's virtual tokens
    take positions (methods.text_budget)."""
    if virtual_tokens(spec.method, spec.to_dict()) == 0:
        return spec.max_length  # no need to read the model's config
    return text_budget(
        spec.strategy,
        spec.method,
        spec.to_dict(),
        limit=max_sequence_length(spec.model_name_or_path),
        model=spec.model_name_or_path,
        max_length=spec.max_length,
        # Batches are padded to a multiple of this, and the padding takes positions too.
        multiple=max(spec.bucket_width or 1, spec.pad_to_multiple_of),
    )


def fit_text_budget(split: TokenizedSplit, spec: RunSpec) -> TokenizedSplit:
    """`split` (tokenized at the run's max_length) as the run reads it: cut to
    `text_length(spec)` tokens where virtual tokens take the rest. The evaluate job and
    `ftcompare predict` both cut here, so a review reads the same in both."""
    length = text_length(spec)
    return split.truncated(length) if length < spec.max_length else split


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


def peft_config(spec: RunSpec, *, total_steps: int | None = None):
    """The PEFT config of a PEFT method's run (`total_steps`: AdaLoRA's schedule needs it)."""
    from peft import TaskType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    peft_type, kwargs = peft_settings(spec, total_steps=total_steps)
    return PEFT_TYPE_TO_CONFIG_MAPPING[peft_type](task_type=TaskType.SEQ_CLS, **kwargs)


def load_base_model(
    *, spec: RunSpec, num_labels: int, device: torch.device, precision: Precision, source: str | None = None
) -> torch.nn.Module:
    """The pretrained encoder with a fresh classification head, on `device`."""
    from transformers import AutoModelForSequenceClassification

    kwargs: dict[str, Any] = {
        "num_labels": num_labels,
        "dtype": precision.base_dtype,
        # No attn_implementation: transformers' default is SDPA where the architecture has
        # it, eager where not (DeBERTa-v2 has no SDPA path; asking for it fails the load).
    }
    if spec.quantization is not None:
        kwargs["quantization_config"] = _quantization_config(spec.quantization, device=device)
        kwargs["device_map"] = {"": device}  # bitsandbytes quantises while loading onto the device
    source = source or resolve_model_path(spec.model_name_or_path)
    model = _from_pretrained(AutoModelForSequenceClassification, source, **kwargs)
    if spec.quantization is None:
        model.to(device)
    elif device.type == "cpu":
        _no_cpu_4bit_repacking(model)
    return model


class _HeldReport(logging.Filter):
    """Holds transformers' load report, which from_pretrained logs as a warning, for
    `_from_pretrained` to judge once it knows what the load found."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in str(record.msg):
            self.held.append(record)
            return False
        return True


def _from_pretrained(auto_class: Any, source: str, **kwargs: Any) -> torch.nn.Module:
    """`auto_class.from_pretrained(source)`, with transformers' load report (a table on
    every load) left out where it says only what a sequence classifier built from a
    pretrained encoder expects: its new head's weights initialised (MISSING), the
    checkpoint's own pretraining head unused (UNEXPECTED). One line says so instead;
    anything else (an encoder weight missing, a shape mismatch) keeps the whole report."""
    report_log = logging.getLogger("transformers.modeling_utils")
    held = _HeldReport()
    report_log.addFilter(held)
    try:
        model, info = auto_class.from_pretrained(source, output_loading_info=True, **kwargs)
    finally:
        report_log.removeFilter(held)
    prefix = f"{model.base_model_prefix}."
    head = {name for name, _ in model.named_parameters() if not name.startswith(prefix)}
    missing = set(info.get("missing_keys") or ())
    if missing <= head and not info.get("mismatched_keys") and not info.get("error_msgs"):
        if missing:
            log.info(
                "%s: new classification head (%s), randomly initialised as expected: the run trains it",
                source,
                ", ".join(sorted(missing)),
            )
    else:
        for record in held.held:
            report_log.handle(record)
    return model


def build_model(
    *, spec: RunSpec, num_labels: int, device: torch.device, precision: Precision, total_steps: int | None = None
) -> torch.nn.Module:
    """The model of one strategy, ready to train: only the strategy's parameters require grad.
    `total_steps`: the run's optimizer steps, which AdaLoRA's rank schedule is set in."""
    if spec.method not in METHODS:
        raise ValueError(f"unknown method {spec.method!r}; allowed: {', '.join(METHODS)}")
    model = load_base_model(spec=spec, num_labels=num_labels, device=device, precision=precision)
    if spec.gradient_checkpointing:
        _recompute_activations(model)
    return add_method(model, spec=spec, total_steps=total_steps)


def add_method(model: torch.nn.Module, *, spec: RunSpec, total_steps: int | None = None) -> torch.nn.Module:
    """The strategy's method on a loaded base model: only the method's parameters (and the
    classification head) require grad afterwards."""
    blocks = {block: spec.block(block) for block in METHOD_BLOCKS[spec.method]}
    # Before any training, for a hub model whose config stated no model_type: a method that
    # cannot apply to the architecture must fail, not train something else.
    check_model(
        spec.strategy,
        spec.method,
        blocks,
        model_type=getattr(model.config, "model_type", None),
        model=spec.model,
        model_config=model.config.to_dict(),
    )
    if spec.method == "full":
        return model
    if spec.method == "bitfit":
        _bitfit(model)
        _trainable_to_fp32(model)
        return model
    from peft import get_peft_model

    # Before any training: PEFT itself drops an entry that matches nothing as long as
    # another one matches (preflight checks the same for local models).
    check_module_lists(
        {spec.strategy: blocks}, [name for name, _ in model.named_modules()], model=spec.model_name_or_path
    )
    for key, peft_type in default_target_checks(spec.strategy, blocks, spec.method):
        check_default_targets(key, peft_type, getattr(model.config, "model_type", None))
    check_widths(spec.strategy, spec.method, blocks, linear_widths(model))
    # No prepare_model_for_kbit_training for a 4-bit base: it upcasts every non-quantised
    # weight to fp32, a cost an encoder this size does not need (the fp32 cast of the
    # trainable weights below is the part that matters), and turns on gradient
    # checkpointing, which is the config's choice here (`gradient_checkpointing`).
    config = peft_config(spec, total_steps=total_steps)
    if config.peft_type == "LN_TUNING":
        config.exclude_modules = _weightless_targets(model, config.target_modules)
    with peft_wrapping():
        model = get_peft_model(model, config)
    for name, param in model.named_parameters():
        # AdaLoRA's rank count divides its update: a constant (PEFT neither trains it on
        # purpose nor saves it), which PEFT 0.21 leaves requiring grad. Trained, it would
        # drift, and the reloaded model, whose count is the rank again, would differ.
        if ".ranknum." in name:
            param.requires_grad = False
    _fit_to_encoder(model)
    _trainable_to_fp32(model)
    return model


def _weightless_targets(model: torch.nn.Module, targets: Any) -> list[str] | None:
    """Targeted modules without weights, which LN tuning has nothing to train in (and PEFT
    fails on): ModernBERT's first layer has an Identity where the others have `attn_norm`."""
    if not isinstance(targets, (list, set, tuple)):
        return None
    found = [
        name
        for name, module in model.named_modules()
        if any(name == entry or name.endswith("." + entry) for entry in targets) and not list(module.parameters())
    ]
    return found or None


def linear_widths(model: torch.nn.Module) -> dict[str, int]:
    """Each Linear module's input width, by module name (4-bit layers are Linear too)."""
    return {name: module.in_features for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def _bitfit(model: torch.nn.Module) -> None:
    """BitFit (Ben Zaken et al., 2022): every bias term trains (attention, feed-forward and
    LayerNorm biases), the rest of the encoder stays frozen; the head trains whole."""
    for name, param in model.named_parameters():
        param.requires_grad = name.endswith("bias") or in_head(name)


def _fit_to_encoder(model: Any) -> None:
    """What prompt learning needs on an encoder classifier (see the module docstring);
    other PEFT methods are left as they are."""
    config = model.active_peft_config
    if not config.is_prompt_learning:
        return
    base = model.get_base_model()
    if config.peft_type == "PREFIX_TUNING":  # PEFT's type names are str enums
        model._prefix_tuning_forward = _prefix_tuning_forward(model, _cache_keyword(base))
        return
    backbone = getattr(base, base.base_model_prefix, None)
    if backbone is None:
        raise ValueError(f"{type(base).__name__} has no backbone {base.base_model_prefix!r} to drop virtual tokens at")
    # Where the text's first position must be back in front: at the encoder where the
    # backbone pools inside itself (BERT's pooler reads the encoder's output), else at the
    # backbone's output, which is what the head reads (RoBERTa, DeBERTa-v2, whose backbone
    # reads its encoder's hidden states rather than its last output, and ModernBERT, which
    # has no encoder module).
    pools_inside = getattr(backbone, "pooler", None) is not None
    target = backbone.encoder if pools_inside else backbone
    target.register_forward_hook(_drop_virtual_positions(config.num_virtual_tokens))


def _drop_virtual_positions(count: int):
    """A forward hook on the encoder: its output without the `count` virtual positions in
    front, so that the head (RoBERTa's classifier, BERT's pooler) reads the text's first
    token. The virtual tokens have done their work by then: every text token attended to them."""

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        hidden = output[0][:, count:]
        if isinstance(output, tuple):
            return (hidden, *output[1:])
        output.last_hidden_state = hidden
        return output

    return hook


def _cache_keyword(model: torch.nn.Module) -> str:
    """What the encoder calls its key/value cache: `past_key_values` in transformers 5.17,
    `cache` in 5.24 (which still takes the old name, with a warning at every call)."""
    backbone = getattr(model, model.base_model_prefix, model)
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


def _prefix_tuning_forward(model: Any, cache_keyword: str):
    """PEFT's prefix-tuning forward for an encoder classifier, without its signature check
    (it looks for a `past_key_values` parameter, which 5.24 renamed): the prefix goes in
    as the encoder's cache through the classification model's keyword arguments; the
    attention mask PEFT passes already covers the prefix (the encoders size their mask
    from it)."""

    def forward(
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        batch_size = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        return model.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            labels=labels,
            **{cache_keyword: model.get_prompt(batch_size)},
            **kwargs,
        )

    return forward


class RankReallocation:
    """AdaLoRA's step: after every optimizer step, before the gradients are cleared, PEFT's
    `update_and_allocate` updates each weight's importance and masks the least important
    ranks to the budget of that step. Its state (the importance averages, the rank pattern)
    is part of a resumable checkpoint."""

    # Why the CUDA-graph path refuses it (steps.TrainStep trains eagerly and records this).
    graph_refusal = (
        "AdaLoRA re-allocates ranks after every optimizer step (PEFT's update_and_allocate: importance "
        "scores from the gradients, new rank masks), which a recorded CUDA graph cannot replay"
    )

    def __init__(self, model: Any) -> None:
        self.tuner = model.base_model
        self.step = 0

    def __call__(self) -> None:
        self.tuner.update_and_allocate(self.step)
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        allocator = self.tuner.rankallocator
        config = self.tuner.peft_config[self.tuner.trainable_adapter_name]
        return {
            "step": self.step,
            "ipt": {n: t.detach().cpu() for n, t in allocator.ipt.items()},
            "exp_avg_ipt": {n: t.detach().cpu() for n, t in allocator.exp_avg_ipt.items()},
            "exp_avg_unc": {n: t.detach().cpu() for n, t in allocator.exp_avg_unc.items()},
            "rank_pattern": config.rank_pattern,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        allocator = self.tuner.rankallocator
        device = next(self.tuner.parameters()).device
        self.step = int(state["step"])
        for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
            setattr(allocator, key, {n: t.to(device) for n, t in state[key].items()})
        self.tuner.peft_config[self.tuner.trainable_adapter_name].rank_pattern = state["rank_pattern"]


def method_step(model: torch.nn.Module) -> RankReallocation | None:
    """What a method must do after every optimizer step, if anything (AdaLoRA only)."""
    tuner = getattr(model, "base_model", None)
    if tuner is not None and hasattr(tuner, "update_and_allocate") and hasattr(tuner, "rankallocator"):
        return RankReallocation(model)
    return None


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

    BitFit is saved whole too, so that its folder loads with plain transformers.

    Returns the size in MB of what the method costs to store: the saved weights, and for
    BitFit the trained biases and head alone (the tokenizer and config are not counted)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = transformers_model(model).config
    config.id2label = id2label(label_names, config.num_labels)
    config.label2id = {name: k for k, name in config.id2label.items()}
    for adapter in getattr(model, "peft_config", {}).values():
        adapter.base_model_name_or_path = base_model
    model.save_pretrained(str(out_dir))
    size_mb = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file()) / 1e6
    if is_bitfit(model):
        size_mb = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad) / 1e6
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


def is_bitfit(model: torch.nn.Module) -> bool:
    """A plain transformers model that trained only some of its weights (BitFit)."""
    return getattr(model, "peft_config", None) is None and any(not p.requires_grad for p in model.parameters())


def load_trained(
    *, spec: RunSpec, model_dir: Path, num_labels: int, device: torch.device, precision: Precision
) -> torch.nn.Module:
    """The fine-tuned model saved by `save_trained`, rebuilt the way it was trained."""
    if spec.method in WHOLE_MODEL_METHODS:
        model = load_base_model(
            spec=spec, num_labels=num_labels, device=device, precision=precision, source=str(model_dir)
        )
    else:
        from peft import PeftModel

        base = load_base_model(spec=spec, num_labels=num_labels, device=device, precision=precision)
        with peft_wrapping():
            model = PeftModel.from_pretrained(base, str(model_dir))
        _fit_to_encoder(model)
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
    if spec.method in WHOLE_MODEL_METHODS:
        raise NotMergeable(f"{spec.method} saves the whole model: its folder already holds a plain model")
    from peft import PeftModel

    base = load_base_model(spec=spec, num_labels=num_labels, device=device, precision=precision)
    if getattr(base, "hf_quantizer", None) is not None:
        base = base.dequantize()
    with peft_wrapping():
        model = PeftModel.from_pretrained(base, str(model_dir))
    if not hasattr(model.base_model, "merge_and_unload"):  # e.g. prompt learning: no weights to merge into
        raise NotMergeable(f"{spec.method} adds no weights that merge into the base model's")
    _trained_copies_in_place(model)
    merged = model.merge_and_unload()
    merged.eval()
    return merged
