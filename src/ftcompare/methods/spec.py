"""One run's settings: the training keys and its method's blocks (RunSpec), as the config
resolves them (ftcompare.plan.config.resolve_run) and every record keeps them."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

from ftcompare.contract import CELL_SETTINGS, ConfigError
from ftcompare.methods.catalogue import BLOCKS


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSpec:
    """Everything one fine-tune job needs to know, resolved from the config. Every value
    comes from the config (config/config.yaml holds the defaults); the field order is the
    order of a run's recorded settings."""

    task: str
    model: str
    strategy: str
    method: str
    seed: int
    model_name_or_path: str
    # The task's primary metric (data.metric, ftcompare.contract.metrics): the best epoch is chosen on it.
    metric: str
    max_length: int
    learning_rate: float
    epochs: int
    batch_size: int
    weight_decay: float
    warmup_ratio: float
    max_grad_norm: float | None
    max_tokens_per_batch: int | None
    gradient_checkpointing: bool
    bucket_width: int | None
    cuda_graphs: bool
    eval_max_tokens_per_batch: int | None
    lr_reference_batch_size: int
    eval_batch_size: int
    precision: str
    group_by_length: bool
    pad_to_multiple_of: int
    compile: bool
    log_every_steps: int
    checkpoint_every_minutes: float | None
    checkpoint_every_steps: int | None
    # The method's blocks by name (config `method_defaults` merged with the strategy's
    # own), and `quantization` where the base is 4-bit: ftcompare.methods.catalogue.
    blocks: Mapping[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    def label(self, trial: str | None = None) -> str:
        """How logs name the run: task/model/strategy[/trial]/seedN, its folders' path."""
        return "/".join([self.task, self.model, self.strategy, *([trial] if trial else []), f"seed{self.seed}"])

    def block(self, name: str) -> dict[str, Any] | None:
        return self.blocks.get(name)

    @property
    def quantization(self) -> dict[str, Any] | None:
        """The 4-bit base's settings; None: the base is not quantised."""
        return self.blocks.get("quantization")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a flat mapping: every field, and each block under its own name."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "blocks"}
        return {**copy.deepcopy(values), **copy.deepcopy(dict(self.blocks))}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunSpec:
        """The inverse of `to_dict`; a block recorded as null is a block the run does not have."""
        known = {f.name for f in dataclasses.fields(cls)} - {"blocks"}
        # records.upgrade names an older run's cell (task, model, metric); until RunSpec has
        # those fields (the study matrix), they are read by the report and dropped here.
        values = {k: v for k, v in values.items() if k in known or k not in CELL_SETTINGS}
        unknown = sorted(set(values) - known - set(BLOCKS))
        if unknown:
            raise ConfigError(f"unknown run settings {unknown}; allowed: {sorted(known | set(BLOCKS))}")
        blocks = {key: dict(value) for key, value in values.items() if key in BLOCKS and value is not None}
        return cls(**{key: value for key, value in values.items() if key in known}, blocks=blocks)
