"""The PEFT side of each method: its PEFT settings, and what PEFT can and cannot do with it.

Torch-free to import: the config checks run while Snakemake builds the job graph. The
functions that must ask the installed PEFT (a `peft:` block's keys, whether a method's
layers have 4-bit versions, an architecture's default target modules) import it when
called: a few seconds, paid only by configs that use them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from typing import Any

from ftcompare.contract import ConfigError
from ftcompare.methods.catalogue import METHOD_BLOCKS, METHOD_TABLE
from ftcompare.methods.spec import RunSpec

# PEFT config fields this workflow sets itself; a `peft:` block may not.
RESERVED_PEFT_KEYS = ("task_type", "peft_type", "inference_mode", "base_model_name_or_path", "revision")


def peft_settings(spec: RunSpec, *, total_steps: int | None = None) -> tuple[str, dict[str, Any]]:
    """(PEFT type, keyword arguments of its config class) for a PEFT method's run, from the
    method's entry (ftcompare.methods.catalogue).

    `total_steps` (the run's optimizer steps) sets AdaLoRA's schedule, which PEFT counts
    in steps: the config gives its phases as fractions of the run."""
    method = METHOD_TABLE[spec.method]
    if method.peft_type is None or method.peft_kwargs is None:
        raise ValueError(f"method {spec.method!r} is not built by PEFT")
    block = spec.block(METHOD_BLOCKS[spec.method][0]) or {}
    try:
        kwargs = method.peft_kwargs(block, total_steps)
    except ValueError as exc:
        raise ValueError(f"strategy {spec.strategy!r} (method {spec.method!r}): {exc}") from None
    peft_type = str(block["peft_type"]).upper() if spec.method == "peft" else method.peft_type
    if "total_step" in _config_fields(peft_type) and kwargs.get("total_step") is None:
        kwargs["total_step"] = _steps(total_steps, spec)
    return peft_type, kwargs


def _steps(total_steps: int | None, spec: RunSpec) -> int:
    if total_steps is None:
        raise ValueError(f"strategy {spec.strategy!r} (method {spec.method!r}) needs the run's total optimizer steps")
    return int(total_steps)


def virtual_tokens(method: str, blocks: Mapping[str, Any]) -> int:
    """Tokens a prompt-learning method adds in front of every input (or of every layer's
    keys and values): the text must leave room for them within the position limit.
    `blocks`: the method's blocks by name (a resolved strategy entry, or RunSpec.to_dict())."""
    entry = METHOD_TABLE[method]
    if entry.peft_type in ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING"):
        return int(blocks[METHOD_BLOCKS[method][0]]["num_virtual_tokens"])
    if method == "peft" and is_prompt_learning(str(blocks["peft"]["peft_type"]).upper()):
        return int(blocks["peft"].get("num_virtual_tokens") or 0)
    return 0


# Text tokens a prompt-learning strategy must keep: below this, the virtual tokens leave
# too little of a text to classify.
MIN_TEXT_TOKENS = 32


def text_budget(
    strategy: str, method: str, blocks: Mapping[str, Any], *, limit: int, model: str, max_length: int, multiple: int = 1
) -> int:
    """The text tokens a run of `strategy` reads within `model`'s `limit` positions: `max_length`,
    or fewer where the method's virtual tokens and the text padded to a `multiple` would pass the
    limit (prompt and P-tuning give each virtual token a position; prefix tuning shifts the text's
    positions by as many). Refuses fewer than MIN_TEXT_TOKENS: the plan asks it of a local model,
    each run of every model."""
    added = virtual_tokens(method, blocks)
    if added == 0:
        return max_length
    room = (limit - added) // multiple * multiple  # the padding takes positions too
    if room < max(MIN_TEXT_TOKENS, multiple):
        padded = f" (padded to a multiple of {multiple})" if multiple > 1 else ""
        raise ConfigError(
            f"strategies.{strategy}: {added} virtual tokens leave {room} of the {limit} positions of {model!r} "
            f"for the text{padded} (at least {MIN_TEXT_TOKENS} needed): use fewer virtual tokens"
        )
    return max_length if -(-max_length // multiple) * multiple <= room else room


# --------------------------------------------------------------------------- asking PEFT


def _mappings() -> tuple[dict, dict]:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    return PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING


def peft_types() -> list[str]:
    return sorted(str(getattr(t, "value", t)) for t in _mappings()[0])


def _config_class(peft_type: str) -> type:
    return _mappings()[0][peft_type]


def _config_fields(peft_type: str) -> list[str]:
    return [f.name for f in dataclasses.fields(_config_class(peft_type))]


def is_prompt_learning(peft_type: str) -> bool:
    from peft.config import PromptLearningConfig

    return issubclass(_config_class(peft_type), PromptLearningConfig)


def takes_4bit_base(peft_type: str | None) -> bool:
    """Whether PEFT can train this method on a bitsandbytes 4-bit base: its tuner has
    4-bit layers (peft/tuners/<name>/bnb.py), or it wraps no linear layer at all (the
    prompt-learning methods; LN tuning, whose LayerNorms bitsandbytes leaves unquantised)."""
    if peft_type is None:
        return False
    if peft_type == "LN_TUNING" or is_prompt_learning(peft_type):
        return True
    tuner = _mappings()[1].get(peft_type)
    if tuner is None:
        return False
    package = tuner.__module__.rpartition(".")[0]
    return importlib.util.find_spec(f"{package}.bnb") is not None


def methods_taking_4bit() -> list[str]:
    return [
        name
        for name, method in METHOD_TABLE.items()
        if "quantization" in METHOD_BLOCKS[name]
        or (method.peft_type not in (None, "peft") and takes_4bit_base(method.peft_type))
    ]


def check_quantization(strategy: str, method: str, peft_type: str | None) -> None:
    """A `quantization:` block on a method that cannot train on a 4-bit base is an error naming it."""
    if takes_4bit_base(peft_type):
        return
    if peft_type is None:
        why = f"method {method!r} trains the base model's own weights in place; a 4-bit base is for PEFT adapters"
    else:
        import peft

        why = f"PEFT {peft.__version__} has no 4-bit (bitsandbytes) layers for {peft_type}"
    raise ConfigError(
        f"strategies.{strategy}.quantization: {why}; remove the block (or set it to null). Methods that train on "
        f"a 4-bit base: {methods_taking_4bit()}, and method: peft with a PEFT type that has 4-bit layers"
    )


def check_peft_block(strategy: str, block: Mapping[str, Any]) -> dict[str, Any]:
    """A `method: peft` strategy's block, checked against the installed PEFT before any job
    runs: the type must exist and every key must be a setting of its config class, which
    must accept the values. Returns the block with the type in PEFT's spelling."""
    import peft

    where = f"strategies.{strategy}.peft"
    peft_type = str(block["peft_type"]).upper()
    if peft_type not in peft_types():
        raise ConfigError(
            f"{where}.peft_type = {block['peft_type']!r} is not a method of PEFT {peft.__version__}; "
            f"choose one of {peft_types()}"
        )
    config_class = _config_class(peft_type)
    for key in RESERVED_PEFT_KEYS:
        if key in block and key != "peft_type":
            raise ConfigError(f"{where}.{key} = {block[key]!r}: set by the workflow, not the config; remove it")
    allowed = [name for name in _config_fields(peft_type) if name not in RESERVED_PEFT_KEYS]
    unknown = [key for key in block if key != "peft_type" and key not in allowed]
    if unknown:
        raise ConfigError(
            f"{where}: {unknown} {'is not a setting' if len(unknown) == 1 else 'are not settings'} of "
            f"{config_class.__name__} (strategy {strategy!r}, method 'peft', peft_type {peft_type!r}, "
            f"PEFT {peft.__version__}); its settings: {sorted(allowed)}"
        )
    kwargs = {key: value for key, value in block.items() if key != "peft_type"}
    if "total_step" in allowed and kwargs.get("total_step") is None:
        kwargs["total_step"] = 1_000_000  # the run's own step count replaces this at build time
    if is_prompt_learning(peft_type) and not kwargs.get("num_virtual_tokens"):
        raise ConfigError(f"{where}.num_virtual_tokens: {peft_type} needs it (how many virtual tokens to learn)")
    try:
        config_class(task_type="SEQ_CLS", **kwargs)
    except Exception as exc:  # PEFT raises ValueError, TypeError and others for bad values
        raise ConfigError(f"{where}: PEFT's {config_class.__name__} rejects these settings: {exc}") from None
    return {**block, "peft_type": peft_type}


def check_default_targets(key: str, peft_type: str, model_type: str | None) -> None:
    """An adapter whose target_modules are left to PEFT (null) needs PEFT to know defaults
    for the architecture; otherwise an error naming what to set."""
    if is_prompt_learning(peft_type):
        return
    tuner = _mappings()[1].get(peft_type)
    mapping = getattr(tuner, "target_module_mapping", None) or {}
    if model_type not in mapping:
        raise ConfigError(
            f"{key} = null leaves the target modules to PEFT, which has no default for {peft_type} on model type "
            f"{model_type!r}: set {key} to a list of module names (e.g. [query, value] for BERT and RoBERTa attention, "
            "[LayerNorm] for their LayerNorms)"
        )


def default_target_checks(strategy: str, spec_blocks: Mapping[str, Any], method: str) -> list[tuple[str, str]]:
    """(config key, PEFT type) for each of a strategy's target_modules left to PEFT."""
    entry = METHOD_TABLE[method]
    if entry.peft_type is None:
        return []
    if method == "peft":
        block = spec_blocks.get("peft") or {}
        peft_type = str(block["peft_type"]).upper()
        fields = _config_fields(peft_type)
        if "target_modules" in fields and block.get("target_modules") is None:
            return [(f"strategies.{strategy}.peft.target_modules", peft_type)]
        return []
    name = METHOD_BLOCKS[method][0]
    block = spec_blocks.get(name) or {}
    if "target_modules" in block and block["target_modules"] is None:
        return [(f"strategies.{strategy}.{name}.target_modules", entry.peft_type)]
    return []
