"""The fine-tuning methods: one entry each in `METHOD_TABLE`, the one place a method is defined.

An entry says what the config lets a strategy of the method set (its block's keys, as JSON
schema: the config schema takes them from here), how PEFT builds it (the keyword arguments
of PEFT's config class, from the block), and what it checks before any job runs. A block's
defaults, each with its reason, are config/config.yaml's `method_defaults.<block>`: a new
method is its entry here and its block there.

Torch- and PEFT-free: the config is resolved while Snakemake builds the job graph.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from ftcompare.contract import ConfigError

Block = Mapping[str, Any]
# (config key of the block, e.g. "strategies.lora.lora", the resolved block) -> raises ConfigError.
BlockCheck = Callable[[str, Block], None]
# The same, with the input width of every Linear module of the model by module name.
WidthCheck = Callable[[str, Block, Mapping[str, int]], None]
# (the block, the run's optimizer steps or None) -> keyword arguments of PEFT's config class.
PeftKwargs = Callable[[Block, int | None], dict[str, Any]]

FAMILIES = (
    "full fine-tuning",
    "selective",  # a subset of the model's own weights trains
    "low-rank",  # an added low-rank (or factorised) update of each target weight
    "rescaling and rotation",  # each target's output rescaled (IA3) or rotated (OFT)
    "virtual tokens",  # learned vectors prepended to the input or to every layer's keys and values
    "other PEFT",  # any PEFT method by its config (method: peft)
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Method:
    """What the model builder needs to know about a method, and what the config allows it."""

    # Its family: the report groups strategies by it (FAMILIES gives the order).
    family: str
    # PEFT's name for it; None: not built by PEFT (full, bitfit); `peft` reads it from its block.
    peft_type: str | None = None
    # The keys of the block it defines (named as the method), as JSON schema properties;
    # None: it defines none (it reads another method's block, or none).
    settings: Mapping[str, Any] | None = None
    # The blocks it reads, each filled from `method_defaults`; None: its own block, if it
    # defines one. Any other block is an error (`quantization` may be added to one whose
    # PEFT tuner has 4-bit layers: see ftcompare.methods.adapters.takes_4bit_base).
    reads: tuple[str, ...] | None = None
    # Block settings the method is defined by: DoRA is LoRA with use_dora. A strategy
    # may not set them otherwise.
    switches: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    # PEFT's config keyword arguments from its (first) block.
    peft_kwargs: PeftKwargs | None = None
    # Checks of its resolved block that PEFT would otherwise fail on, or change in silence.
    check: BlockCheck | None = None
    # Checks against the model's module widths (preflight for a local model; the job otherwise).
    check_widths: WidthCheck | None = None


# --------------------------------------------------------------------------- settings

MODULES = {"$ref": "#/$defs/module_list"}
RATE = {"type": "number", "minimum": 0, "maximum": 1}
RANK = {"type": "integer", "minimum": 1}
SCALE = {"$ref": "#/$defs/positive_number"}
VIRTUAL_TOKENS = {"$ref": "#/$defs/num_virtual_tokens"}

# A 4-bit base: QLoRA's own block, an option for other adapters (a block of no method's own).
QUANTIZATION_SETTINGS = {
    "quant_type": {"enum": ["nf4", "fp4"]},
    "double_quant": {"type": "boolean"},
    "compute_dtype": {"enum": ["bfloat16", "float16", "float32"]},
}


def _targets(block: Block) -> dict[str, Any]:
    """`target_modules` as PEFT takes it (absent from the block: PEFT's default)."""
    if "target_modules" not in block:
        return {}
    entries = block["target_modules"]
    return {"target_modules": None if entries is None else list(entries)}


def _steps(steps: int | None) -> int:
    if steps is None:
        raise ValueError("this method's schedule needs the run's total optimizer steps")
    return int(steps)


# --------------------------------------------------------------------------- PEFT's arguments

# PEFT's own switches the `lora` block passes through, with PEFT's defaults when absent.
LORA_SWITCHES = ("use_dora", "use_rslora", "bias", "init_lora_weights")


def _lora(block: Block, steps: int | None) -> dict[str, Any]:
    switches = {key: block[key] for key in LORA_SWITCHES if key in block}
    return {
        "r": block["r"],
        "lora_alpha": block["alpha"],
        "lora_dropout": block["dropout"],
        **_targets(block),
    } | switches


def _adalora(block: Block, steps: int | None) -> dict[str, Any]:
    # PEFT counts the schedule in steps; the config gives its phases as fractions of the run.
    total = _steps(steps)
    return {
        "init_r": block["init_r"],
        "target_r": block["target_r"],
        "lora_alpha": block["alpha"],
        "lora_dropout": block["dropout"],
        **_targets(block),
        "total_step": total,
        "tinit": int(block["initial_phase"] * total),
        "tfinal": int(block["final_phase"] * total),
        "deltaT": block["deltaT"],
        "orth_reg_weight": block["orth_reg_weight"],
    }


def _check_adalora(where: str, block: Block) -> None:
    if block["target_r"] > block["init_r"]:
        raise ConfigError(
            f"{where}.target_r = {block['target_r']} is above {where}.init_r = {block['init_r']}: AdaLoRA prunes "
            "each update from init_r down to target_r on average; set target_r <= init_r"
        )
    if block["initial_phase"] + block["final_phase"] >= 1:
        raise ConfigError(
            f"{where}.initial_phase = {block['initial_phase']} and {where}.final_phase = {block['final_phase']} "
            "leave no steps for pruning between them: their sum must be below 1"
        )


def _ia3(block: Block, steps: int | None) -> dict[str, Any]:
    feedforward = block["feedforward_modules"]
    return {**_targets(block), "feedforward_modules": None if feedforward is None else list(feedforward)}


def _check_ia3(where: str, block: Block) -> None:
    targets, feedforward = block.get("target_modules"), block.get("feedforward_modules")
    if targets is None or feedforward is None:
        return  # PEFT's defaults for the architecture fill them in together
    if missing := [entry for entry in feedforward if entry not in targets]:
        raise ConfigError(
            f"{where}.feedforward_modules {missing} {'is' if len(missing) == 1 else 'are'} not among its "
            f"target_modules {list(targets)}: IA3 rescales only the modules it targets; feedforward_modules "
            "must be a subset of target_modules"
        )


def _oft(block: Block, steps: int | None) -> dict[str, Any]:
    # PEFT takes either the number of blocks (r) or their size: the size, as it fits every width.
    return {"r": 0, "oft_block_size": block["block_size"], **_targets(block)}


def _check_oft_widths(where: str, block: Block, widths: Mapping[str, int]) -> None:
    """PEFT fits a block size that does not divide a module's input width to one that does,
    with only a warning: the run would not be the configured one. Refused instead."""
    targets = block.get("target_modules")
    if targets is None:
        return  # PEFT's defaults: the job's model holds the answer
    size = block["block_size"]
    targeted = {
        name: width
        for name, width in widths.items()
        if any(name == entry or name.endswith(f".{entry}") for entry in targets)
    }
    misfits = sorted({width for width in targeted.values() if width % size or size > width})
    if misfits:
        common = math.gcd(*targeted.values())
        allowed = [d for d in range(2, common + 1) if common % d == 0]
        raise ConfigError(
            f"{where}.block_size = {size} does not divide the input width {misfits} of the modules it targets "
            f"({list(targets)}); PEFT would use another size than the one recorded. Allowed: {allowed}"
        )


def _prompt_tuning(block: Block, steps: int | None) -> dict[str, Any]:
    return {"num_virtual_tokens": block["num_virtual_tokens"], "prompt_tuning_init": block["init"].upper()}


def _prefix_tuning(block: Block, steps: int | None) -> dict[str, Any]:
    return {
        "num_virtual_tokens": block["num_virtual_tokens"],
        "prefix_projection": block["projection"],
        "encoder_hidden_size": block["encoder_hidden_size"],
    }


def _p_tuning(block: Block, steps: int | None) -> dict[str, Any]:
    return {
        "num_virtual_tokens": block["num_virtual_tokens"],
        "encoder_hidden_size": block["encoder_hidden_size"],
        "encoder_reparameterization_type": block["encoder"].upper(),
    }


def _any_peft(block: Block, steps: int | None) -> dict[str, Any]:
    # Its keys are PEFT's own (checked against the installed PEFT: ftcompare.methods.adapters).
    return {key: value for key, value in block.items() if key != "peft_type"}


# --------------------------------------------------------------------------- the methods

LORA_SETTINGS = {
    "r": RANK,
    "alpha": SCALE,
    "dropout": RATE,
    "target_modules": MODULES,
    # PEFT's own LoRA switches, passed through (absent: PEFT's default).
    "use_dora": {"type": "boolean"},
    "use_rslora": {"type": "boolean"},
    "bias": {"enum": ["none", "all", "lora_only"]},
    # Initialisations that leave the base weights as they are: the saved adapter is
    # applied to the original base (pissa, olora, loftq, corda and eva rewrite it).
    "init_lora_weights": {"enum": [True, False, "gaussian", "orthogonal"]},
}

# The methods the model builder implements: the one list of methods (build_model, the
# tuning grid and the report read it too).
METHOD_TABLE: dict[str, Method] = {
    "full": Method(family="full fine-tuning"),
    "bitfit": Method(family="selective"),
    "ln_tuning": Method(
        family="selective",
        peft_type="LN_TUNING",
        settings={"target_modules": MODULES},
        peft_kwargs=lambda block, steps: _targets(block),
    ),
    "lora": Method(family="low-rank", peft_type="LORA", settings=LORA_SETTINGS, peft_kwargs=_lora),
    "qlora": Method(family="low-rank", peft_type="LORA", reads=("lora", "quantization"), peft_kwargs=_lora),
    "dora": Method(
        family="low-rank", peft_type="LORA", reads=("lora",), switches={"lora": {"use_dora": True}}, peft_kwargs=_lora
    ),
    "rslora": Method(
        family="low-rank", peft_type="LORA", reads=("lora",), switches={"lora": {"use_rslora": True}}, peft_kwargs=_lora
    ),
    "adalora": Method(
        family="low-rank",
        peft_type="ADALORA",
        settings={
            "init_r": RANK,
            "target_r": RANK,
            "alpha": SCALE,
            "dropout": RATE,
            "target_modules": MODULES,
            "initial_phase": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "final_phase": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "deltaT": {"type": "integer", "minimum": 1},
            "orth_reg_weight": {"type": "number", "minimum": 0},
        },
        peft_kwargs=_adalora,
        check=_check_adalora,
    ),
    "vera": Method(
        family="low-rank",
        peft_type="VERA",
        settings={"r": RANK, "dropout": RATE, "d_initial": {"type": "number"}, "target_modules": MODULES},
        peft_kwargs=lambda block, steps: {
            "r": block["r"],
            "vera_dropout": block["dropout"],
            "d_initial": block["d_initial"],
            **_targets(block),
        },
    ),
    "loha": Method(
        family="low-rank",
        peft_type="LOHA",
        settings={"r": RANK, "alpha": SCALE, "target_modules": MODULES},
        peft_kwargs=lambda block, steps: {"r": block["r"], "alpha": block["alpha"], **_targets(block)},
    ),
    "lokr": Method(
        family="low-rank",
        peft_type="LOKR",
        settings={"r": RANK, "alpha": SCALE, "target_modules": MODULES},
        peft_kwargs=lambda block, steps: {"r": block["r"], "alpha": block["alpha"], **_targets(block)},
    ),
    "ia3": Method(
        family="rescaling and rotation",
        peft_type="IA3",
        settings={
            "target_modules": MODULES,
            "feedforward_modules": {"type": ["array", "null"], "items": {"type": "string", "minLength": 1}},
        },
        peft_kwargs=_ia3,
        check=_check_ia3,
    ),
    "oft": Method(
        family="rescaling and rotation",
        peft_type="OFT",
        settings={"block_size": {"type": "integer", "minimum": 2}, "target_modules": MODULES},
        peft_kwargs=_oft,
        check_widths=_check_oft_widths,
    ),
    "prompt_tuning": Method(
        family="virtual tokens",
        peft_type="PROMPT_TUNING",
        settings={"num_virtual_tokens": VIRTUAL_TOKENS, "init": {"enum": ["random", "sample_vocab"]}},
        peft_kwargs=_prompt_tuning,
    ),
    "prefix_tuning": Method(
        family="virtual tokens",
        peft_type="PREFIX_TUNING",
        settings={
            "num_virtual_tokens": VIRTUAL_TOKENS,
            "projection": {"type": "boolean"},
            "encoder_hidden_size": {"type": "integer", "minimum": 1},
        },
        peft_kwargs=_prefix_tuning,
    ),
    "p_tuning": Method(
        family="virtual tokens",
        peft_type="P_TUNING",
        settings={
            "num_virtual_tokens": VIRTUAL_TOKENS,
            "encoder_hidden_size": {"type": "integer", "minimum": 1},
            "encoder": {"enum": ["mlp", "lstm"]},
        },
        peft_kwargs=_p_tuning,
    ),
    # Any PEFT method by its config: `peft_type` and the keywords of its config class,
    # checked against the installed PEFT (ftcompare.methods.adapters.check_peft_block).
    "peft": Method(family="other PEFT", peft_type="peft", reads=("peft",), peft_kwargs=_any_peft),
}
METHODS = tuple(METHOD_TABLE)
# Not built by PEFT, so saved whole (models.save_trained): their folders load with plain transformers.
WHOLE_MODEL_METHODS = tuple(name for name, method in METHOD_TABLE.items() if method.peft_type is None)


def _reads(name: str, method: Method) -> tuple[str, ...]:
    if method.reads is not None:
        return method.reads
    return (name,) if method.settings is not None else ()


METHOD_BLOCKS: dict[str, tuple[str, ...]] = {name: _reads(name, method) for name, method in METHOD_TABLE.items()}
# Every method block a strategy may hold.
BLOCKS = tuple(dict.fromkeys(block for blocks in METHOD_BLOCKS.values() for block in blocks))
# Any PEFT method's block: its keys are PEFT's own, passed through, so it has no defaults.
PEFT_BLOCK_SCHEMA = {
    "description": "any PEFT method; every other key is a keyword of its config class, checked against PEFT",
    "type": "object",
    "required": ["peft_type"],
    "properties": {"peft_type": {"type": "string", "minLength": 1}},
    "additionalProperties": True,
}
# Each block as JSON schema: what a strategy may set in it, and tune (dotted: lora.r).
BLOCK_SCHEMAS: dict[str, Mapping[str, Any]] = {
    **{
        name: {"type": "object", "additionalProperties": False, "properties": dict(method.settings)}
        for name, method in METHOD_TABLE.items()
        if method.settings is not None
    },
    # null: no 4-bit base (an overlay cannot delete a key, only null it).
    "quantization": {"type": ["object", "null"], "additionalProperties": False, "properties": QUANTIZATION_SETTINGS},
    "peft": PEFT_BLOCK_SCHEMA,
}
# The blocks `method_defaults` fills in (config/config.yaml: each key with its reason).
DEFAULTED_BLOCKS = tuple(block for block in BLOCK_SCHEMAS if block != "peft")


def method_family(method: str) -> str:
    """The report's group for a method; records of methods this version does not know go last."""
    known = METHOD_TABLE.get(method)
    return known.family if known is not None else FAMILIES[-1]


def check_block(strategy: str, method: str, blocks: Mapping[str, Any]) -> None:
    """The method's own checks of a strategy's resolved blocks (before any job)."""
    entry = METHOD_TABLE[method]
    if entry.check is not None:
        block = METHOD_BLOCKS[method][0]
        entry.check(f"strategies.{strategy}.{block}", blocks[block])


def check_widths(strategy: str, method: str, blocks: Mapping[str, Any], widths: Mapping[str, int]) -> None:
    """The method's checks against the model: `widths`, each Linear module's input width."""
    entry = METHOD_TABLE[method]
    if entry.check_widths is not None:
        block = METHOD_BLOCKS[method][0]
        entry.check_widths(f"strategies.{strategy}.{block}", blocks[block], widths)


# --------------------------------------------------------------------------- where a method cannot apply

# A model's config.json settings (None: not read yet, a hub model before fetch_model).
ModelConfig = Mapping[str, Any] | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inapplicable:
    """Why a method cannot apply to an architecture: it would fail, or train something else in
    silence (only the head, or a head reading virtual tokens). Checked before any job."""

    reason: str
    # Whether it holds for a model's config.json; None: always. An unread config (a hub model
    # before its fetch) counts as the published checkpoints' settings, i.e. it holds.
    holds: Callable[[Mapping[str, Any]], bool] | None = None

    def applies_to(self, model_config: ModelConfig) -> bool:
        return self.holds is None or model_config is None or self.holds(model_config)


def _modernbert_has_no_biases(model_config: Mapping[str, Any]) -> bool:
    # ModernBertConfig's defaults, as in answerdotai/ModernBERT-base's config.json: all false.
    return not any(model_config.get(key, False) for key in ("attention_bias", "mlp_bias", "norm_bias"))


def _modernbert_pools_the_mean(model_config: Mapping[str, Any]) -> bool:
    # ModernBertConfig defaults to "cls"; answerdotai/ModernBERT-base's config.json says "mean".
    return model_config.get("classifier_pooling", "cls") == "mean"


_NO_CACHE = (
    "its encoder takes no key/value cache ({cls}.forward drops unknown keyword arguments): PEFT's "
    "prefix keys and values never reach attention, and the attention mask PEFT extends over the "
    "prefix no longer fits the input (a size mismatch at the first step)"
)
_MEAN_POOLED_PROMPT = (
    "its head (classifier_pooling = mean in its config.json) averages every position the attention mask "
    "covers, and PEFT extends that mask over the virtual tokens: the head would average the virtual "
    "tokens into the text's representation, unlike every other encoder here, whose head reads the "
    "text's first token (a ModernBERT whose config.json says classifier_pooling: cls is accepted)"
)

# method -> model_type (config.json's) -> why the method cannot apply to it. Methods read
# via `method: peft` are looked up by their PEFT type (PREFIX_TUNING: prefix_tuning's entry).
# The rest of the facts about an architecture are module names, which differ per model:
# config/encoders.yaml gives each model's targets, and preflight (local models) or the job
# (hub models) checks every name against the model itself.
INAPPLICABLE: dict[str, dict[str, Inapplicable]] = {
    "bitfit": {
        "modernbert": Inapplicable(
            reason="ModernBERT's linear layers and LayerNorms have no bias terms (attention_bias, mlp_bias and "
            "norm_bias are false in its config.json): BitFit would train the classification head alone",
            holds=_modernbert_has_no_biases,
        ),
    },
    "prefix_tuning": {
        "deberta-v2": Inapplicable(reason=_NO_CACHE.format(cls="DebertaV2ForSequenceClassification")),
        "modernbert": Inapplicable(reason=_NO_CACHE.format(cls="ModernBertForSequenceClassification")),
    },
    "prompt_tuning": {"modernbert": Inapplicable(reason=_MEAN_POOLED_PROMPT, holds=_modernbert_pools_the_mean)},
    "p_tuning": {"modernbert": Inapplicable(reason=_MEAN_POOLED_PROMPT, holds=_modernbert_pools_the_mean)},
}


def _named_method(method: str, entry: Mapping[str, Any]) -> str:
    """The named method whose facts apply: `peft` blocks by their PEFT type."""
    if method != "peft":
        return method
    peft_type = str((entry.get("peft") or {}).get("peft_type", "")).upper()
    named = [name for name, known in METHOD_TABLE.items() if known.peft_type == peft_type and not known.reads]
    return named[0] if named else method


def inapplicable(method: str, entry: Mapping[str, Any], *, model_type: str | None, model_config: ModelConfig = None):
    """Why `method` (with its resolved strategy `entry`) cannot apply to `model_type`, or None."""
    fact = INAPPLICABLE.get(_named_method(method, entry), {}).get(model_type or "")
    return fact if fact is not None and fact.applies_to(model_config) else None


def check_model(
    strategy: str,
    method: str,
    entry: Mapping[str, Any],
    *,
    model_type: str | None,
    model: str,
    model_config: ModelConfig = None,
) -> None:
    """Refuse a strategy whose method cannot apply to the model (INAPPLICABLE), naming the
    strategy, its method, the model and what to do. `model`: its name in the config (the
    models block's key, or model.name_or_path); `model_type`: config.json's, or as the config
    states it for a hub model not yet fetched (None: unknown, nothing to check)."""
    fact = inapplicable(method, entry, model_type=model_type, model_config=model_config)
    if fact is None:
        return
    named = _named_method(method, entry)
    how = f"method {method!r}" + (f" ({named})" if named != method else "")
    raise ConfigError(
        f"strategies.{strategy} ({how}) cannot apply to model {model!r} (model_type {model_type!r}): "
        f"{fact.reason}. Leave it out for this model (models.{model}.skip_strategies: [{strategy}]), "
        "or use another method for it"
    )
