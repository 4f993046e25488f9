"""What ran where: package versions, hardware and code version for each run record."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import numbers
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

from ftcompare.contract.allocator import allocator_setting
from ftcompare.contract.files import atomic_write_bytes

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "datasets",
    "bitsandbytes",
    "accelerate",
    "tokenizers",
    "scikit-learn",
    "pandas",
    "numpy",
    "snakemake",
)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(repo: Path | None = None) -> str | None:
    repo = repo or Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def cpu_name() -> str:
    # platform.processor() is empty on most Linux systems; /proc/cpuinfo names the chip.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def hardware(device: Any | None = None) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device_type": "cpu",
        "device": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        # Which device the job claimed (ftcompare.contract.devices), and its cluster job if any.
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_type="cuda",
            device=props.name,
            gpu_memory_gb=round(props.total_memory / 1e9, 1),
            bf16_supported=torch.cuda.is_bf16_supported(),
            cuda_allocator=allocator_setting(),
        )
    return info


def run_provenance(*, device: Any | None, started_at: str) -> dict[str, Any]:
    return {
        **hardware(device),
        "packages": package_versions(),
        "git_commit": git_commit(),
        "started_at": started_at,
        "finished_at": now(),
    }


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by None: json.dumps would write them
    as NaN / Infinity, which is not JSON (strict parsers reject the whole record)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write atomically (a half-written record must never look like a finished run), as
    strict JSON: non-finite numbers are written as null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe(record), indent=2, default=str, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode())
