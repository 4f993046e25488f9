"""The job graph's tables: what the Snakefile's rules ask of the plan, computed here as
plain functions of the checked config so that they are tested without Snakemake."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ftcompare.methods import BLOCKS

# Format 0 wrote these blocks into every run's settings, null where unused (the others
# only where used). Snakemake reruns a job whose params change, compared in order, so the
# fine-tune jobs' params keep this form (`run_params`): finished studies do not retrain.
FORMAT_0_BLOCKS = ("lora", "ia3", "quantization")


def run_params(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A run's settings (RunSpec.to_dict()) in the form the job graph compares (see FORMAT_0_BLOCKS)."""
    plain = {key: value for key, value in settings.items() if key not in BLOCKS}
    first = {block: settings.get(block) for block in FORMAT_0_BLOCKS}
    later = {key: value for key, value in settings.items() if key in BLOCKS and key not in FORMAT_0_BLOCKS}
    return {**plain, **first, **later}
