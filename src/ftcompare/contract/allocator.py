"""The CUDA caching allocator's setting for this workflow's jobs (torch-free: it must run
before torch is imported).

Length-grouped batches change shape every step. With the allocator's default fixed-size
segments, blocks freed by one shape rarely fit the next, so the reserved pool grows to
about twice what is allocated (measured in this project's H200 bench) and the allocator
keeps calling cudaMalloc/cudaFree. Expandable segments grow and shrink one mapping
instead. A user's own setting always wins.
"""

from __future__ import annotations

import os

ALLOCATOR_VARIABLES = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")  # newer name first
EXPANDABLE_SEGMENTS = "expandable_segments:True"


def prefer_expandable_segments() -> None:
    """Turn expandable segments on unless the environment configures the allocator."""
    if not any(os.environ.get(name) for name in ALLOCATOR_VARIABLES):
        # The older name: torch 2.11 and 2.13 both read it.
        os.environ["PYTORCH_CUDA_ALLOC_CONF"] = EXPANDABLE_SEGMENTS


def allocator_setting() -> str | None:
    """The allocator configuration in effect, for the run record."""
    for name in ALLOCATOR_VARIABLES:
        if os.environ.get(name):
            return f"{name}={os.environ[name]}"
    return None
