"""Study configuration: loading, schema validation, defaults, and per-run resolution.

The config file is the user's manual (config/config.yaml). This module turns it into
typed, fully resolved settings: `validate_config` rejects anything the schema does not
allow with a message naming the key and what is allowed, fills in the defaults and
resolves each strategy's method blocks; `resolve_run` merges the `training` defaults with
one strategy's overrides into the `RunSpec` a fine-tune job uses. The checks between
keys, and against PEFT, the data and the model, are ftcompare.plan.checks'.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ftcompare.contract import METRICS, ConfigError
from ftcompare.methods import BLOCK_SCHEMAS, BLOCKS, DEFAULTED_BLOCKS, METHOD_BLOCKS, METHOD_TABLE, METHODS, RunSpec
from ftcompare.plan import matrix as study

__all__ = ["ConfigError", "RunSpec", "load_config", "load_schema", "resolve_run", "validate_config"]

# The library reads the workflow's own files (the schema, config/config.yaml as the one
# source of defaults), so it runs from its checkout: an editable install (pip install -e .),
# as the README's set-up does.
REPO_ROOT = Path(__file__).resolve().parents[3]
SCHEMA_PATH = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
REFERENCE_RECIPE = REPO_ROOT / "config" / "reference-recipe.yaml"


def load_schema(schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The config schema: the file, with what it leaves to the code filled in: the metrics
    (ftcompare.contract.metrics.METRICS), the keys of `training` (its overrides and its own),
    and of a strategy (`method`, the overrides, and a block per method: ftcompare.methods.catalogue)."""
    if not Path(schema_path).is_file():
        raise ConfigError(
            f"the config schema {str(schema_path)!r} is missing: ftcompare reads the workflow's own files, so it "
            "runs from its checkout; install it editable from the repository root (pip install -e .)"
        )
    with Path(schema_path).open(encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    defs = schema["$defs"]
    defs.update(copy.deepcopy(BLOCK_SCHEMAS))
    overrides = {key: {"$ref": f"#/$defs/training_overrides/{key}"} for key in defs["training_overrides"]}
    blocks = {block: {"$ref": f"#/$defs/{block}"} for block in BLOCK_SCHEMAS}
    properties = schema["properties"]
    properties["data"]["properties"]["metric"] = {"enum": list(METRICS)}  # one list: the code's
    properties["training"]["properties"] = {**overrides, **defs["training_settings"]}
    properties["method_defaults"]["properties"] = {block: blocks[block] for block in DEFAULTED_BLOCKS}
    # A model's own method_defaults are checked as the study's; a task or a model entry is
    # the data or model block, each key optional (the rest comes from `data` or `model`).
    properties["model"]["properties"]["method_defaults"] = copy.deepcopy(properties["method_defaults"])
    for matrix, block in (("tasks", "data"), ("models", "model")):
        entry = {key: value for key, value in properties[block].items() if key not in ("required", "description")}
        properties[matrix]["additionalProperties"] = {**entry, "type": ["object", "null"]}
    strategy = properties["strategies"]["additionalProperties"]
    strategy["properties"] = {**strategy["properties"], **overrides, **blocks}
    return _inline_refs(schema, schema)


def _inline_refs(node: Any, schema: Mapping[str, Any]) -> Any:
    """`node` with each local `$ref` (#/$defs/...) replaced by what it points to: the same
    schema, validated without resolving a reference per key (a study checks thousands of
    trial configs; resolving took most of the time)."""
    if isinstance(node, Mapping):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/") and len(node) == 1:
            target: Any = schema
            for part in ref[2:].split("/"):
                target = target[part]
            return _inline_refs(copy.deepcopy(target), schema)
        return {key: _inline_refs(value, schema) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(value, schema) for value in node]
    return node


@functools.cache
def training_overrides() -> tuple[str, ...]:
    """The keys a strategy may set to override `training`: the schema's list."""
    return tuple(load_schema()["$defs"]["training_overrides"])


# Sections whose missing keys come from config/config.yaml, the one source of defaults
# (Snakemake layers every --configfile over it anyway; this serves callers that pass a
# partial config, such as tests).
DEFAULTED_SECTIONS = ("data", "training", "method_defaults", "report", "tuning", "monitoring", "cost")


def load_config(*overlays: str | Path, base: str | Path = DEFAULT_CONFIG) -> dict[str, Any]:
    """`base` with each overlay layered on top, as Snakemake layers `--configfile`s over
    the Snakefile's `configfile:`: mappings merge key by key, anything else (lists
    included) is replaced."""
    merged = load_yaml(base)
    for overlay in overlays:
        merged = study.layer(merged, load_yaml(overlay))
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
        if where in ("tasks", "models"):  # folder names
            return f"{where[:-1]} name {value!r} is not allowed: use letters, digits, '_', '-' and '.'"
        return f"strategy name {value!r} is not allowed: use letters, digits, '_' and '-'"
    if validator == "required":
        return f"{where} is missing required key(s): {error.message}"
    return f"{where} = {value!r}: {error.message}"


# Read once per process: a study checks every cell's config and every trial's (thousands
# for GLUE x encoders x methods), and parsing the schema and config.yaml each time cost
# over 90% of that.
@functools.cache
def _validator(schema_path: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load_schema(schema_path))


@functools.cache
def _defaults() -> dict[str, Any]:
    return load_yaml(DEFAULT_CONFIG)


def validate_config(config: Mapping[str, Any], *, schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Validate `config` against the schema and return a deep copy with the defaults filled
    in and each strategy resolved to its method and blocks.

    Raises ConfigError listing every problem, each naming the key and what is allowed.
    The checks between keys and against the data, the model and PEFT: ftcompare.plan.checks.
    """
    validator = _validator(str(schema_path))
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(_describe(e) for e in errors))

    resolved = copy.deepcopy(dict(config))
    defaults = copy.deepcopy(_defaults())
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
    # The matrix, each task and model block whole (ftcompare.plan.matrix: a cell's config).
    resolved["tasks"] = study.task_blocks(resolved)
    # A model's skip_strategies may name strategies this study lacks: an overlay of models
    # (config/encoders.yaml) lists what they cannot run whatever the strategies.
    resolved["models"] = study.model_blocks(resolved)
    return resolved


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
    reads = METHOD_BLOCKS[method]
    # A 4-bit base is a block of its own for QLoRA, an option for others (null: none).
    optional_4bit = "quantization" not in reads and "quantization" in entry
    quantization = entry.pop("quantization") if optional_4bit else None
    for block in BLOCKS:
        if block in entry and block not in reads:
            raise ConfigError(
                f"strategies.{name}.{block} does not apply to method {method!r}; "
                f"it reads: {list(reads) or 'no method block'}"
            )
    own = {block: dict(entry.get(block) or {}) for block in reads}
    for block in reads:
        if block == "peft":  # PEFT's own keys, no defaults; the type in PEFT's spelling
            entry[block] = {**own[block], "peft_type": str(own[block]["peft_type"]).upper()}
            continue
        entry[block] = {**method_defaults[block], **own[block]}
    for block, switches in METHOD_TABLE[method].switches.items():
        for key, value in switches.items():
            if key in own[block] and own[block][key] != value:
                raise ConfigError(
                    f"strategies.{name}.{block}.{key} = {own[block][key]!r}: method {method!r} is {block} with "
                    f"{key}: {value!r}; for other settings use method {block!r}"
                )
        entry[block] = {**entry[block], **switches}
    if quantization is not None:
        entry["quantization"] = {**method_defaults["quantization"], **quantization}
    return entry


def resolve_run(config: Mapping[str, Any], *, strategy: str, seed: int) -> RunSpec:
    """The settings of one (strategy, seed) run from a validated one-cell config (a cell's
    config: ftcompare.plan.matrix.cell_config): every `training` key, the strategy's overrides
    of them, and its blocks."""
    strategies = config["strategies"]
    if strategy not in strategies:
        raise ConfigError(f"unknown strategy {strategy!r}; configured: {list(strategies)}")
    entry = strategies[strategy]
    cell = study.the_cell(config)
    training = {
        key: entry.get(key, value) if key in training_overrides() else value
        for key, value in config["training"].items()
    }
    return RunSpec(
        task=cell.task,
        model=cell.model,
        strategy=strategy,
        method=entry["method"],
        seed=int(seed),
        model_name_or_path=config["model"]["name_or_path"],
        metric=config["data"]["metric"],
        **training,
        blocks={block: copy.deepcopy(entry[block]) for block in BLOCKS if entry.get(block) is not None},
    )
