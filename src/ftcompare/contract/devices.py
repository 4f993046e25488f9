"""Give each GPU job a GPU of its own.

Snakemake's `--resources gpu=N` only counts: it lets N GPU jobs run at once but does not
say which device each should use, and CUDA hands every process cuda:0. So a job claims
its device itself, before torch initialises CUDA:

- the candidates are the entries of CUDA_VISIBLE_DEVICES when it is set (SLURM or the
  user chose them; a job never leaves them), otherwise every GPU the driver lists;
- a claim is an exclusive `fcntl.flock` on one lock file per candidate, held open for
  the life of the process: the kernel drops it when the process ends, however it ends
  (SIGKILL and out-of-memory kills included), so a dead job never keeps its device;
- the job then sets CUDA_VISIBLE_DEVICES to what it claimed, and torch sees that device
  as cuda:0;
- with every candidate held, it waits until one is released, saying who holds them.

Kept free of torch: `torch.cuda.device_count()` initialises the CUDA driver, after which
CUDA_VISIBLE_DEVICES is no longer read.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

LOCK_DIR_VARIABLE = "FTCOMPARE_GPU_LOCK_DIR"
# How often a job that found every device held tries again, and how often it says so.
POLL_S = 2.0
REPORT_EVERY_S = 300.0


class DeviceError(RuntimeError):
    """A GPU request that cannot be met here; the message says what is visible."""


@dataclasses.dataclass
class Claim:
    """Devices held by this process until `release()` or its end."""

    devices: list[str]
    lock_files: list[IO[str]]

    def release(self) -> None:
        for handle in self.lock_files:
            handle.close()  # closing the descriptor drops the flock
        self.lock_files = []


def nvidia_gpu_count() -> int:
    """GPUs the NVIDIA driver lists (`nvidia-smi -L`), 0 without a driver."""
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return 0
    if listed.returncode != 0:
        return 0
    return sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))


def candidates(
    environ: Mapping[str, str] | None = None, *, gpu_count: Callable[[], int] = nvidia_gpu_count
) -> list[str]:
    """The devices this process may use: CUDA_VISIBLE_DEVICES's entries if it is set
    (indices, UUIDs or MIG ids, as given), else every GPU by index."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(i) for i in range(gpu_count())]
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    # CUDA stops at the first invalid entry ("-1", the usual way to hide every GPU).
    valid = []
    for entry in entries:
        if re.fullmatch(r"-\d+", entry):
            break
        valid.append(entry)
    return valid


def lock_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the per-device lock files live.

    One folder per user and machine (in XDG_RUNTIME_DIR if it exists, else /tmp), so
    that two studies on one workstation share its devices; inside a SLURM job a folder
    of the job's own on the node (under TMPDIR or /tmp: an XDG_RUNTIME_DIR exported
    from the login node may not exist there), because SLURM has already given the job
    its devices and may number them 0, 1, ... in every job on the node.
    FTCOMPARE_GPU_LOCK_DIR overrides both.
    """
    environ = os.environ if environ is None else environ
    if environ.get(LOCK_DIR_VARIABLE):
        return Path(environ[LOCK_DIR_VARIABLE])
    user = f"ftcompare-{os.getuid()}"
    job = environ.get("SLURM_JOB_ID")
    if job:
        return Path(environ.get("TMPDIR") or "/tmp") / user / "gpu-locks" / f"slurm-job-{job}"
    runtime_dir = environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime_dir) if runtime_dir and Path(runtime_dir).is_dir() else Path("/tmp") / user
    return base / "ftcompare-gpu-locks"


def _lock_path(directory: Path, device: str) -> Path:
    return directory / (re.sub(r"[^A-Za-z0-9_.-]", "_", device) + ".lock")


def _try_lock(path: Path) -> IO[str] | None:
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held open on purpose)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    # Who holds it, for the message of a job that has to wait.
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}: {' '.join(sys.argv)[:200]}\n")
    handle.flush()
    return handle


def _holders(directory: Path, devices: Sequence[str]) -> str:
    parts = []
    for device in devices:
        try:
            holder = _lock_path(directory, device).read_text(encoding="utf-8").strip()
        except OSError:
            holder = "?"
        parts.append(f"{device}: {holder or '?'}")
    return "; ".join(parts)


def claim_devices(
    count: int,
    devices: Sequence[str],
    *,
    directory: Path,
    poll_s: float = POLL_S,
    timeout_s: float | None = None,
) -> Claim:
    """Hold `count` of `devices` (the first free ones), waiting while too few are free.

    Raises DeviceError if `count` exceeds the devices given, or TimeoutError after
    `timeout_s` (None: wait as long as it takes)."""
    if count < 1:
        raise ValueError(f"count = {count}; claim at least one device")
    if count > len(devices):
        raise DeviceError(
            f"the job asks for {count} GPU(s) but {len(devices)} are visible ({list(devices)}); "
            "lower the rule's `gpu` resource or make more devices visible"
        )
    directory.mkdir(parents=True, exist_ok=True)
    started = last_report = time.monotonic()
    reported = False
    while True:
        held: list[tuple[str, IO[str]]] = []
        for device in devices:
            handle = _try_lock(_lock_path(directory, device))
            if handle is not None:
                held.append((device, handle))
                if len(held) == count:
                    return Claim(devices=[d for d, _ in held], lock_files=[h for _, h in held])
        for _, handle in held:  # not enough: hold none while waiting, or two jobs could deadlock
            handle.close()
        now = time.monotonic()
        if timeout_s is not None and now - started > timeout_s:
            raise TimeoutError(
                f"no {count} free GPU(s) among {list(devices)} after {timeout_s:.0f} s; held by: "
                f"{_holders(directory, devices)}"
            )
        if not reported or now - last_report > REPORT_EVERY_S:
            log.warning(
                "waiting for %d free GPU(s) among %s; held by: %s (locks in %s)",
                count,
                list(devices),
                _holders(directory, devices),
                directory,
            )
            reported, last_report = True, now
        time.sleep(poll_s)


# The claim of this process's job: referenced here so that it lives as long as the process.
_JOB_CLAIM: Claim | None = None


def claim_for_job(gpus: int, *, gpu_count: Callable[[], int] = nvidia_gpu_count) -> list[str]:
    """Claim `gpus` devices for this process and make them the only ones CUDA shows it.

    Call before torch initialises CUDA (the rule scripts do, first thing). Returns the
    claimed devices; [] when the job asks for none or no GPU is visible (it runs on the
    CPU and CUDA_VISIBLE_DEVICES is left alone)."""
    global _JOB_CLAIM
    if gpus <= 0:
        return []
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("claim_for_job must run before CUDA is initialised: CUDA_VISIBLE_DEVICES is read once")
    visible = candidates(gpu_count=gpu_count)
    if not visible:
        log.info("no GPU visible: running on the CPU")
        return []
    if _JOB_CLAIM is not None:
        _JOB_CLAIM.release()
    directory = lock_dir()
    _JOB_CLAIM = claim_devices(gpus, visible, directory=directory)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(_JOB_CLAIM.devices)
    log.info(
        "claimed GPU %s of %s (CUDA_VISIBLE_DEVICES=%s; locks in %s)",
        ",".join(_JOB_CLAIM.devices),
        visible,
        os.environ["CUDA_VISIBLE_DEVICES"],
        directory,
    )
    return list(_JOB_CLAIM.devices)
