"""Where a model comes from: a hub id, a local folder, or a Python package that ships one.

Kept free of torch and transformers so that Snakemake can check a model source while it
builds the job graph without paying for those imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Model types whose position ids start after the padding index (RoBERTa's scheme), so
# they accept `max_position_embeddings - pad_token_id - 1` tokens.
OFFSET_POSITION_MODEL_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer", "xlm-roberta-xl"}
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def position_limit(model_config: Mapping[str, Any]) -> int:
    """The longest input a model's position embeddings allow, from its config.json."""
    positions = int(model_config["max_position_embeddings"])
    if model_config.get("model_type") in OFFSET_POSITION_MODEL_TYPES:
        return positions - int(model_config.get("pad_token_id", 1)) - 1
    return positions


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
        raise ModelSourceError(
            f"model folder {name_or_path!r} has no weights; expected one of {list(WEIGHT_FILES)}"
        )


