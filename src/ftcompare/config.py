"""Study configuration: schema validation, defaults, and per-run resolution.

The config file is the user's manual (config/config.yaml). This module turns it into
typed, fully resolved settings: `validate_config` rejects anything the schema does not
allow with a message naming the key and what is allowed, and `resolve_run` merges the
`training` defaults with one strategy's overrides into the `RunSpec` a fine-tune job uses.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# The library reads the workflow's own files (the schema, config/config.yaml as the one
# source of defaults), so it runs from its checkout: an editable install (pip install -e .),
# as the README's set-up does. A plain install would find no checkout here.
REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
REFERENCE_RECIPE = REPO_ROOT / "config" / "reference-recipe.yaml"
if not SCHEMA_PATH.is_file():
    raise ImportError(
        f"ftcompare runs from its checkout, and {SCHEMA_PATH} is missing: install it editable "
        "from the repository root (pip install -e .), not as a plain package"
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Method:
    """What the model builder needs to know about a method, and what the config allows it."""

    # The method blocks it reads, each filled from `method_defaults`; any other block is an
    # error (`quantization` may be added to one whose PEFT tuner has 4-bit layers: see
    # ftcompare.adapters.takes_4bit_base).
    blocks: tuple[str, ...] = ()
    # Its family: the report groups strategies by it (FAMILIES gives the order).
    family: str
    # PEFT's name for it; None: not built by PEFT (full, bitfit); `peft` reads it from its block.
    peft_type: str | None = None
    # Block settings the method is defined by: DoRA is LoRA with use_dora. A strategy
    # may not set them otherwise.
    switches: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)


FAMILIES = (
    "full fine-tuning",
    "selective",  # a subset of the model's own weights trains
    "low-rank",  # an added low-rank (or factorised) update of each target weight
    "rescaling and rotation",  # each target's output rescaled (IA3) or rotated (OFT)
    "virtual tokens",  # learned vectors prepended to the input or to every layer's keys and values
    "other PEFT",  # any PEFT method by its config (method: peft)
)

# The methods the model builder implements: the one list of methods. (The schema leaves
# `method` to this list; build_model, the tuning grid and the report read it too.)
METHOD_TABLE: dict[str, Method] = {
    "full": Method(family="full fine-tuning"),
    "bitfit": Method(family="selective"),
    "ln_tuning": Method(blocks=("ln_tuning",), family="selective", peft_type="LN_TUNING"),
    "lora": Method(blocks=("lora",), family="low-rank", peft_type="LORA"),
    "qlora": Method(blocks=("lora", "quantization"), family="low-rank", peft_type="LORA"),
    "dora": Method(blocks=("lora",), family="low-rank", peft_type="LORA", switches={"lora": {"use_dora": True}}),
    "rslora": Method(blocks=("lora",), family="low-rank", peft_type="LORA", switches={"lora": {"use_rslora": True}}),
    "adalora": Method(blocks=("adalora",), family="low-rank", peft_type="ADALORA"),
    "vera": Method(blocks=("vera",), family="low-rank", peft_type="VERA"),
    "loha": Method(blocks=("loha",), family="low-rank", peft_type="LOHA"),
    "lokr": Method(blocks=("lokr",), family="low-rank", peft_type="LOKR"),
    "ia3": Method(blocks=("ia3",), family="rescaling and rotation", peft_type="IA3"),
    "oft": Method(blocks=("oft",), family="rescaling and rotation", peft_type="OFT"),
    "prompt_tuning": Method(blocks=("prompt_tuning",), family="virtual tokens", peft_type="PROMPT_TUNING"),
    "prefix_tuning": Method(blocks=("prefix_tuning",), family="virtual tokens", peft_type="PREFIX_TUNING"),
    "p_tuning": Method(blocks=("p_tuning",), family="virtual tokens", peft_type="P_TUNING"),
    "peft": Method(blocks=("peft",), family="other PEFT", peft_type="peft"),
}
METHODS = tuple(METHOD_TABLE)
# Not built by PEFT, so saved whole (models.save_trained): their folders load with plain transformers.
WHOLE_MODEL_METHODS = tuple(name for name, method in METHOD_TABLE.items() if method.peft_type is None)
METHOD_BLOCKS: dict[str, tuple[str, ...]] = {name: method.blocks for name, method in METHOD_TABLE.items()}
# Every method block a strategy may hold; `method_defaults` has one for each but `peft`
# (whose keys are PEFT's own, passed through).
BLOCKS = tuple(dict.fromkeys(block for blocks in METHOD_BLOCKS.values() for block in blocks))
# Blocks added to the run settings since the first four methods: left out of a run's
# settings where they are None, so that runs recorded before them keep equal settings
# (Snakemake reruns a run whose settings change).
LATER_BLOCKS = tuple(block for block in BLOCKS if block not in ("lora", "ia3", "quantization"))


def method_family(method: str) -> str:
    """The report's group for a method; records of methods this version does not know go last."""
    known = METHOD_TABLE.get(method)
    return known.family if known is not None else FAMILIES[-1]


def load_schema(schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    with Path(schema_path).open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


# The keys a strategy may set to override `training`: the schema's list.
TRAINING_OVERRIDES = tuple(load_schema()["$defs"]["training_overrides"])
# Sections whose missing keys come from config/config.yaml, the one source of defaults
# (Snakemake layers every --configfile over it anyway; this serves callers that pass a
# partial config, such as tests).
DEFAULTED_SECTIONS = ("data", "training", "method_defaults", "report", "tuning", "monitoring")


class ConfigError(ValueError):
    """A config value the workflow cannot use; the message names it and what is allowed."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSpec:
    """Everything one fine-tune job needs to know, resolved from the config."""

    strategy: str
    method: str
    seed: int
    model_name_or_path: str
    max_length: int
    learning_rate: float
    epochs: int
    batch_size: int
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float | None
    # Defaults = the behaviour before these settings existed, so that train.json
    # records written then still load.
    max_tokens_per_batch: int | None = None
    gradient_checkpointing: bool = False
    bucket_width: int | None = None
    cuda_graphs: bool = False
    eval_max_tokens_per_batch: int | None = None
    lr_reference_batch_size: int
    eval_batch_size: int
    precision: str
    group_by_length: bool
    pad_to_multiple_of: int
    compile: bool
    log_every_steps: int
    checkpoint_every_minutes: float | None
    checkpoint_every_steps: int | None
    # The method's blocks (config `method_defaults` merged with the strategy's own); None
    # where the method does not read the block. `quantization` set: a 4-bit base.
    lora: dict[str, Any] | None = None
    ia3: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    adalora: dict[str, Any] | None = None
    vera: dict[str, Any] | None = None
    loha: dict[str, Any] | None = None
    lokr: dict[str, Any] | None = None
    oft: dict[str, Any] | None = None
    prompt_tuning: dict[str, Any] | None = None
    prefix_tuning: dict[str, Any] | None = None
    p_tuning: dict[str, Any] | None = None
    ln_tuning: dict[str, Any] | None = None
    peft: dict[str, Any] | None = None

    def block(self, name: str) -> dict[str, Any] | None:
        return getattr(self, name)

    def effective_learning_rate(self, *, reviews_per_step: float | None = None) -> float:
        """`learning_rate` is set for `lr_reference_batch_size` reviews per step; other
        batch sizes scale it by the square root of the ratio, the scaling rule that holds
        for Adam (Malladi et al., 2022), so a bigger batch for speed keeps the same
        dynamics. With a token budget the batches vary in size: pass their mean
        (`reviews_per_step`); otherwise the batch is `batch_size`."""
        reviews = self.batch_size if reviews_per_step is None else reviews_per_step
        return self.learning_rate * (reviews / self.lr_reference_batch_size) ** 0.5

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        # The blocks added later are absent where unused, so the settings of a run recorded
        # before they existed stay equal (and Snakemake does not rerun it).
        return {key: value for key, value in values.items() if not (key in LATER_BLOCKS and value is None)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown run settings {unknown}; allowed: {sorted(known)}")
        return cls(**values)


def load_config(*overlays: str | Path, base: str | Path = DEFAULT_CONFIG) -> dict[str, Any]:
    """`base` with each overlay layered on top, as Snakemake layers `--configfile`s over
    the Snakefile's `configfile:`: mappings merge key by key, anything else (lists
    included) is replaced."""
    merged = load_yaml(base)
    for overlay in overlays:
        merged = _layer(merged, load_yaml(overlay))
    return merged


def _layer(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _layer(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    with path.open(encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(loaded).__name__}")
    return loaded


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key_path(error)
    value = error.instance
    validator = error.validator
    if validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(value) - set(allowed)) if isinstance(value, dict) else []
        return f"unknown key(s) {extra} under {where}; allowed keys: {allowed}"
    if validator == "enum":
        return f"{where} = {value!r} is not allowed; choose one of {error.validator_value}"
    if validator == "type":
        hint = ""
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+", value.strip()):
            # PyYAML reads 2e-5 (no dot) as a string: the most common way to get here.
            hint = " (YAML reads numbers like 2e-5 as text: write 2.0e-5)"
        return f"{where} = {value!r} must be of type {error.validator_value}{hint}"
    if "propertyNames" in error.relative_schema_path:  # reported as its inner `pattern`
        return f"strategy name {value!r} is not allowed: use letters, digits, '_' and '-'"
    if validator == "required":
        return f"{where} is missing required key(s): {error.message}"
    return f"{where} = {value!r}: {error.message}"


def validate_config(
    config: Mapping[str, Any],
    *,
    schema_path: str | Path = SCHEMA_PATH,
    preflight: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Validate `config` and return a deep copy with defaults filled in.

    Raises ConfigError listing every problem, each naming the key and what is allowed.
    `preflight` (ftcompare.workflow_support.preflight) checks the sources once the
    defaults are in, before the checks between keys: a max_length beyond the model's
    limit must be reported as that, not as a token budget too small for it.
    """
    schema = load_schema(schema_path)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(_describe(e) for e in errors))

    resolved = copy.deepcopy(dict(config))
    defaults = load_yaml(DEFAULT_CONFIG)
    for section in DEFAULTED_SECTIONS:
        resolved[section] = {**defaults[section], **(resolved.get(section) or {})}
    resolved["method_defaults"] = {
        block: {**values, **(resolved["method_defaults"].get(block) or {})}
        for block, values in defaults["method_defaults"].items()
    }
    resolved["strategies"] = {
        name: _resolve_strategy_entry(name, entry, method_defaults=resolved["method_defaults"])
        for name, entry in config["strategies"].items()
    }
    _check_data_paths(resolved["data"])
    if preflight is not None:
        preflight(resolved)
    _check_batch_shapes(resolved["training"])
    _check_token_budgets(resolved)
    baseline = resolved["report"]["baseline"]
    if baseline not in resolved["strategies"]:
        raise ConfigError(
            f"report.baseline = {baseline!r} is not a configured strategy; configured: {list(resolved['strategies'])}"
        )
    from ftcompare.tuning import check_grid  # tuning reads this module

    check_grid(resolved)
    return resolved


def _check_batch_shapes(training: Mapping[str, Any]) -> None:
    if training["bucket_width"] is not None and not training["group_by_length"]:
        raise ConfigError(
            f"training.bucket_width = {training['bucket_width']} groups reviews by length, but "
            "training.group_by_length = false: set bucket_width to null, or group_by_length to true"
        )
    if training["cuda_graphs"] and training["bucket_width"] is None:
        raise ConfigError(
            "training.cuda_graphs = true needs training.bucket_width (e.g. 32): without buckets every batch "
            "width is its own shape, and each shape is one more graph to record"
        )
    if training["cuda_graphs"] and training["compile"]:
        raise ConfigError("training.cuda_graphs and training.compile cannot both be true: choose one")


def _check_token_budgets(config: Mapping[str, Any]) -> None:
    """Every token budget must hold one review of `max_length` tokens, padded."""
    training = config["training"]
    multiple = training["bucket_width"] or training["pad_to_multiple_of"]
    widest = -(-training["max_length"] // multiple) * multiple
    budgets = {"training.max_tokens_per_batch": training["max_tokens_per_batch"]}
    eval_budget = training["eval_max_tokens_per_batch"]
    eval_widest = -(-training["max_length"] // training["pad_to_multiple_of"]) * training["pad_to_multiple_of"]
    if eval_budget is not None and eval_budget < eval_widest:
        raise ConfigError(
            f"training.eval_max_tokens_per_batch = {eval_budget} cannot hold one review of training.max_length = "
            f"{training['max_length']} tokens ({eval_widest} padded): use at least {eval_widest}, or null for no budget"
        )
    for name, entry in config["strategies"].items():
        if "max_tokens_per_batch" in entry:
            budgets[f"strategies.{name}.max_tokens_per_batch"] = entry["max_tokens_per_batch"]
    for key, budget in budgets.items():
        if budget is not None and budget < widest:
            raise ConfigError(
                f"{key} = {budget} cannot hold one review of training.max_length = {training['max_length']} "
                f"tokens ({widest} padded to a multiple of {multiple}): use at least {widest}, or null for no budget"
            )


def _resolve_strategy_entry(
    name: str, entry: Mapping[str, Any] | None, *, method_defaults: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    entry = dict(entry or {})
    method = entry.get("method", name if name in METHODS else None)
    if method is None:
        raise ConfigError(
            f"unknown strategy {name!r}: name a method with `strategies.{name}.method`, "
            f"one of {list(METHODS)} (or use one of those as the strategy name)"
        )
    if method not in METHODS:
        raise ConfigError(f"strategies.{name}.method = {method!r} is not allowed; choose one of {list(METHODS)}")
    entry["method"] = method
    info = METHOD_TABLE[method]
    # A 4-bit base is a block of its own for QLoRA, an option for others (null: none).
    optional_4bit = "quantization" not in info.blocks and "quantization" in entry
    quantization = entry.pop("quantization") if optional_4bit else None
    for block in BLOCKS:
        if block in entry and block not in info.blocks:
            raise ConfigError(
                f"strategies.{name}.{block} does not apply to method {method!r}; "
                f"it reads: {list(info.blocks) or 'no method block'}"
            )
    own = {block: dict(entry.get(block) or {}) for block in info.blocks}
    for block in info.blocks:
        if block == "peft":
            from ftcompare.adapters import check_peft_block  # imports PEFT: only for configs that use it

            entry[block] = check_peft_block(name, entry.get(block) or {})
            continue
        entry[block] = {**method_defaults[block], **(entry.get(block) or {})}
    for block, switches in info.switches.items():
        for key, value in switches.items():
            if key in own[block] and own[block][key] != value:
                raise ConfigError(
                    f"strategies.{name}.{block}.{key} = {own[block][key]!r}: method {method!r} is {block} with "
                    f"{key}: {value!r}; for other settings use method {block!r}"
                )
        entry[block] = {**entry[block], **switches}
    if quantization is not None:
        from ftcompare.adapters import check_quantization

        peft_type = entry["peft"]["peft_type"] if method == "peft" else info.peft_type
        check_quantization(name, method, peft_type)
        entry["quantization"] = {**method_defaults["quantization"], **quantization}
    return entry


def _check_data_paths(data: Mapping[str, Any]) -> None:
    source = data["source"]
    if source == "hub":
        return
    if not data.get("train"):
        raise ConfigError(f"data.source = {source!r} needs data.train (a path); got {data.get('train')!r}")
    if source != "aclimdb" and not data.get("test"):
        raise ConfigError(f"data.source = {source!r} needs data.test (a path); got {data.get('test')!r}")


def resolve_run(config: Mapping[str, Any], *, strategy: str, seed: int) -> RunSpec:
    """The settings of one (strategy, seed) run from a validated config."""
    strategies = config["strategies"]
    if strategy not in strategies:
        raise ConfigError(f"unknown strategy {strategy!r}; configured: {list(strategies)}")
    entry = strategies[strategy]
    training = config["training"]
    overrides = {key: entry.get(key, training[key]) for key in TRAINING_OVERRIDES}
    return RunSpec(
        strategy=strategy,
        method=entry["method"],
        seed=int(seed),
        model_name_or_path=config["model"]["name_or_path"],
        max_length=training["max_length"],
        lr_reference_batch_size=training["lr_reference_batch_size"],
        eval_batch_size=training["eval_batch_size"],
        eval_max_tokens_per_batch=training["eval_max_tokens_per_batch"],
        precision=training["precision"],
        group_by_length=training["group_by_length"],
        pad_to_multiple_of=training["pad_to_multiple_of"],
        bucket_width=training["bucket_width"],
        cuda_graphs=training["cuda_graphs"],
        compile=training["compile"],
        log_every_steps=training["log_every_steps"],
        checkpoint_every_minutes=training["checkpoint_every_minutes"],
        checkpoint_every_steps=training["checkpoint_every_steps"],
        **{block: entry.get(block) for block in BLOCKS},
        **overrides,
    )
