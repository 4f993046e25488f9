"""The device a job runs on, its autocast context and its peak memory: what training,
inference and the bench share."""

from __future__ import annotations

import resource

import torch

from ftcompare.model.build import Precision


def select_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def autocast(device: torch.device, precision: Precision, *, cache: bool = True):
    if precision.autocast_dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype, cache_enabled=cache)


def peak_memory(device: torch.device, *, earlier: dict[str, float | None] | None = None) -> dict[str, float | None]:
    """This process's peaks so far, and the larger of them and `earlier` (the peaks of the
    processes a resumed run ran in before, kept in its checkpoints)."""
    # ru_maxrss is in KiB on Linux: the process's peak resident memory.
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    peaks: dict[str, float | None] = {
        "peak_gpu_mem_allocated_gb": None,
        "peak_gpu_mem_reserved_gb": None,
        "peak_rss_gb": rss_gb,
    }
    if device.type == "cuda":
        peaks["peak_gpu_mem_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        peaks["peak_gpu_mem_reserved_gb"] = torch.cuda.max_memory_reserved(device) / 1e9
    for key, value in (earlier or {}).items():
        if value is not None and key in peaks:
            peaks[key] = value if peaks[key] is None else max(peaks[key], value)
    return peaks
