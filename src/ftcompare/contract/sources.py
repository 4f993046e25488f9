"""Where a model comes from: a hub id, a local folder, or a Python package that ships one.

Kept free of torch and transformers so that Snakemake can check a model source while it
builds the job graph without paying for those imports.
"""

from __future__ import annotations

import difflib
import json
import struct
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from ftcompare.contract.errors import ConfigError

# Model types whose position ids start after the padding index (RoBERTa's scheme), so
# they accept `max_position_embeddings - pad_token_id - 1` tokens.
OFFSET_POSITION_MODEL_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer", "xlm-roberta-xl"}
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")  # what PEFT saves


def position_limit(model_config: Mapping[str, Any]) -> int:
    """The longest input a model's position embeddings allow, from its config.json."""
    positions = int(model_config["max_position_embeddings"])
    if model_config.get("model_type") in OFFSET_POSITION_MODEL_TYPES:
        return positions - int(model_config.get("pad_token_id", 1)) - 1
    return positions


def check_max_length(max_length: int, *, limit: int, model: str) -> None:
    """Refuse a `training.max_length` past the model's position limit (`position_limit`):
    the plan checks a local model with it, the tokenize job every model once downloaded."""
    if max_length > limit:
        raise ConfigError(
            f"training.max_length = {max_length} exceeds what {model!r} allows ({limit} tokens, "
            f"from its position embeddings); set training.max_length <= {limit}"
        )


class ModelSourceError(ValueError):
    """A model id or folder that cannot be loaded; the message says why."""


PACKAGE_PREFIX = "package:"


def resolve_model_path(name_or_path: str) -> str:
    """A hub id or folder as given, or for `package:NAME` the model folder that the
    installed Python package NAME ships (`NAME.get_model_path()`): offline machines get
    real pretrained weights from a package registry that way."""
    if not name_or_path.startswith(PACKAGE_PREFIX):
        return name_or_path
    import importlib

    module_name = name_or_path[len(PACKAGE_PREFIX) :]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelSourceError(
            f"model.name_or_path = {name_or_path!r}: package {module_name!r} is not installed ({exc})"
        ) from exc
    if not hasattr(module, "get_model_path"):
        raise ModelSourceError(f"model.name_or_path = {name_or_path!r}: {module_name} has no get_model_path()")
    return str(module.get_model_path())


def portable_model_name(name_or_path: str) -> str:
    """How a saved adapter names its base model so that it loads from anywhere on this
    machine: a hub id as it is, a `package:` model or a folder as its absolute path (not
    the study's fetched copy, nor a path relative to the study's folder)."""
    if is_hub_id(name_or_path):
        return name_or_path
    return str(Path(resolve_model_path(name_or_path)).expanduser().resolve())


def is_hub_id(name_or_path: str) -> bool:
    """A Hugging Face Hub model id (`roberta-base`, `org/name`), which the workflow
    fetches before its jobs run, rather than a local folder or a `package:` model."""
    if name_or_path.startswith(PACKAGE_PREFIX):
        return False
    looks_local = (
        Path(name_or_path).expanduser().exists()
        or name_or_path.startswith((".", "/", "~"))
        or name_or_path.count("/") > 1
    )
    return not looks_local


def check_model_source(name_or_path: str) -> None:
    """Fail early on a local model folder that cannot load. Hub ids are left to the Hub."""
    if is_hub_id(name_or_path):
        return
    name_or_path = resolve_model_path(name_or_path)
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ModelSourceError(f"model.name_or_path = {name_or_path!r} is not a folder")
    if not (path / "config.json").is_file():
        raise ModelSourceError(f"model folder {name_or_path!r} has no config.json")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelSourceError(f"model folder {name_or_path!r} has no weights; expected one of {list(WEIGHT_FILES)}")


# --- which modules a strategy's adapters target ------------------------------------------

# The keys of a method block (or of a `peft:` block) that name modules of the model. PEFT
# matches an entry against a module name when it is the name or ends with "." + entry,
# and it complains only when no entry matches anything: a typo beside a good entry was
# silently dropped. (A string instead of a list is PEFT's regular expression: not checked.)
MODULE_LIST_KEYS = ("target_modules", "feedforward_modules")


def module_lists(strategies: Mapping[str, Mapping[str, Any]]) -> Iterator[tuple[str, list[str]]]:
    """(config key, entries) for every module list of every resolved strategy."""
    for name, entry in strategies.items():
        for block, settings in entry.items():
            if not isinstance(settings, Mapping):
                continue
            for key in MODULE_LIST_KEYS:
                entries = settings.get(key)
                if isinstance(entries, list) and entries:
                    yield f"strategies.{name}.{block}.{key}", list(entries)


def matches_module(entry: str, module_names: Collection[str]) -> bool:
    """PEFT's rule for a list entry (peft.tuners.tuners_utils.check_target_module_exists)."""
    return any(name == entry or name.endswith("." + entry) for name in module_names)


def check_module_lists(
    strategies: Mapping[str, Mapping[str, Any]], module_names: Collection[str], *, model: str
) -> None:
    """Every target_modules / feedforward_modules entry must match a module of the model;
    otherwise ModelSourceError naming the key, the entry and close matches."""
    problems = []
    # Suggestions come from the innermost modules (the layers adapters wrap), not from
    # containers such as 'encoder' or 'layer'.
    leaves = [name for name in module_names if name and not any(other.startswith(name + ".") for other in module_names)]
    suffixes = _suffixes(leaves)
    for key, entries in module_lists(strategies):
        for entry in entries:
            if not matches_module(entry, module_names):
                close = difflib.get_close_matches(entry, suffixes, n=3, cutoff=0.6)
                hint = f"did you mean {' or '.join(map(repr, close))}?" if close else "no name is close"
                problems.append(f"{key}: {entry!r} matches no module of {model!r} ({hint})")
    if problems:
        endings = sorted({name.rsplit(".", 1)[-1] for name in leaves})
        raise ModelSourceError(
            "; ".join(problems)
            + f". Its innermost modules are named ...{', ...'.join(endings[:40])}"
            + (" ..." if len(endings) > 40 else "")
        )


def _suffixes(module_names: Collection[str]) -> list[str]:
    """The names an entry could mean: each module's last one and two components
    ('value', 'self.value'), without layer numbers."""
    found = set()
    for name in module_names:
        parts = name.split(".")
        for size in (1, 2):
            tail = parts[-size:]
            if len(tail) == size and not any(part.isdigit() for part in tail):
                found.add(".".join(tail))
    return sorted(found)


def weight_module_names(folder: Path) -> set[str] | None:
    """The modules that hold weights in a local model folder, read from its safetensors
    header(s) alone: a few kB, no torch. None when the folder has no safetensors weights.
    (The classification head, created when the model is loaded, is not among them.)"""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        tensors = list(json.loads(index.read_text())["weight_map"])
    elif (folder / "model.safetensors").is_file():
        with (folder / "model.safetensors").open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            tensors = [name for name in json.loads(handle.read(size)) if name != "__metadata__"]
    else:
        return None
    return {name.rpartition(".")[0] for name in tensors}


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file, from its header and size alone (no torch):
    None when the header reads and the file holds every byte it announces."""
    size = Path(path).stat().st_size
    try:
        with Path(path).open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if 8 + length > size:
                return f"its header announces {length:,} bytes, and the file has {size:,} in all"
            header = json.loads(handle.read(length))
        end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    except (struct.error, UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError) as exc:
        return f"its header does not read: {type(exc).__name__}: {exc}"
    if 8 + length + end != size:
        return f"{size:,} bytes where its header announces {8 + length + end:,}"
    return None


def model_file(name_or_path: str, filename: str) -> Path:
    """One file of a model: from its folder, or downloaded from the hub (and cached)."""
    folder = Path(resolve_model_path(name_or_path))
    if folder.is_dir():
        path = folder / filename
        if not path.is_file():
            raise ModelSourceError(f"model.name_or_path = {name_or_path!r}: {path} does not exist")
        return path
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(name_or_path, filename))


def max_sequence_length(name_or_path: str) -> int:
    """The longest input the model's position embeddings allow."""
    return position_limit(json.loads(model_file(name_or_path, "config.json").read_text()))
