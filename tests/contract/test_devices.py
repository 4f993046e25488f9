"""Each GPU job claims a device of its own (ftcompare.contract.devices), on CPU with faked devices.

The claims are tested across real processes, because that is what they arbitrate:
four jobs on four devices, a fifth that waits, and a holder killed with SIGKILL whose
device the kernel hands on.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftcompare.contract import devices

REPO_ROOT = Path(__file__).resolve().parents[2]

# A job's first steps, with the driver's GPU count faked: claim, report, hold until stdin closes.
JOB = """
import os, sys
from ftcompare.contract import devices
claimed = devices.claim_for_job(int(sys.argv[1]), gpu_count=lambda: int(sys.argv[2]))
print(os.environ.get("CUDA_VISIBLE_DEVICES"), claimed, flush=True)
sys.stdin.read()
"""


def start_job(lock_dir: Path, *, gpus: int = 1, gpu_count: int = 4, visible: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), devices.LOCK_DIR_VARIABLE: str(lock_dir)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return subprocess.Popen(
        [sys.executable, "-c", JOB, str(gpus), str(gpu_count)],
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def claimed_device(job: subprocess.Popen, timeout_s: float = 60) -> str:
    """The CUDA_VISIBLE_DEVICES the job set after claiming; fails if it claims nothing in time."""
    ready, _, _ = select.select([job.stdout], [], [], timeout_s)
    assert ready, f"no claim within {timeout_s} s"
    line = job.stdout.readline()
    assert line, job.stderr.read()
    return line.split()[0]


def stop(*jobs: subprocess.Popen) -> None:
    for job in jobs:
        if job.poll() is None:
            job.kill()
        job.wait(timeout=30)


def test_candidates_are_the_visible_devices_or_every_gpu():
    assert devices.candidates({}, gpu_count=lambda: 4) == ["0", "1", "2", "3"]
    assert devices.candidates({}, gpu_count=lambda: 0) == []
    # Set by SLURM or the user: those entries, as given, and nothing else.
    assert devices.candidates({"CUDA_VISIBLE_DEVICES": "2,3"}, gpu_count=lambda: 8) == ["2", "3"]
    assert devices.candidates({"CUDA_VISIBLE_DEVICES": "GPU-1a2b, GPU-3c4d"}) == ["GPU-1a2b", "GPU-3c4d"]
    # Empty, or an invalid entry first, hides every GPU (CUDA stops at the first invalid one).
    assert devices.candidates({"CUDA_VISIBLE_DEVICES": ""}, gpu_count=lambda: 8) == []
    assert devices.candidates({"CUDA_VISIBLE_DEVICES": "-1"}, gpu_count=lambda: 8) == []
    assert devices.candidates({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, gpu_count=lambda: 8) == ["1"]


def test_lock_dir_is_per_user_and_machine_or_per_slurm_job(tmp_path):
    uid = os.getuid()
    assert devices.lock_dir({"XDG_RUNTIME_DIR": str(tmp_path)}) == tmp_path / "ftcompare-gpu-locks"
    # An XDG_RUNTIME_DIR that does not exist here (exported from another machine): /tmp.
    missing = {"XDG_RUNTIME_DIR": str(tmp_path / "no-such-dir")}
    assert devices.lock_dir(missing) == Path(f"/tmp/ftcompare-{uid}/ftcompare-gpu-locks")
    in_job = {"XDG_RUNTIME_DIR": str(tmp_path), "SLURM_JOB_ID": "42", "TMPDIR": "/scratch/job42"}
    assert devices.lock_dir(in_job) == Path(f"/scratch/job42/ftcompare-{uid}/gpu-locks/slurm-job-42")
    assert devices.lock_dir({devices.LOCK_DIR_VARIABLE: "/x", "SLURM_JOB_ID": "42"}) == Path("/x")


def test_four_jobs_get_four_devices_a_fifth_waits_and_a_killed_job_frees_its_own(tmp_path):
    jobs = [start_job(tmp_path) for _ in range(4)]
    waiting = None
    try:
        claimed = [claimed_device(job) for job in jobs]
        assert sorted(claimed) == ["0", "1", "2", "3"]

        waiting = start_job(tmp_path)
        time.sleep(3)
        assert waiting.poll() is None  # still waiting: every device is held
        victim = jobs.pop(1)
        victim.send_signal(signal.SIGKILL)  # no clean-up code runs: the kernel drops the lock
        victim.wait(timeout=30)
        assert claimed_device(waiting) == claimed[1]
        waiting.stdin.close()
        assert waiting.wait(timeout=30) == 0
        # It said what it waited for, and who held the devices.
        assert "waiting for 1 free GPU(s) among ['0', '1', '2', '3']; held by: 0: pid " in waiting.stderr.read()
    finally:
        stop(*jobs, *([waiting] if waiting else []))


def test_a_job_that_ends_releases_its_device(tmp_path):
    first = start_job(tmp_path, gpu_count=1)
    try:
        assert claimed_device(first) == "0"
        first.stdin.close()  # the job finishes normally
        assert first.wait(timeout=30) == 0
    finally:
        stop(first)
    second = start_job(tmp_path, gpu_count=1)
    try:
        assert claimed_device(second) == "0"
    finally:
        stop(second)


def test_claims_stay_within_cuda_visible_devices(tmp_path):
    jobs = [start_job(tmp_path, visible="5,7", gpu_count=8) for _ in range(2)]
    try:
        assert sorted(claimed_device(job) for job in jobs) == ["5", "7"]
    finally:
        stop(*jobs)


def test_two_gpus_per_job(tmp_path):
    job = start_job(tmp_path, gpus=2, gpu_count=4)
    try:
        assert claimed_device(job) == "0,1"
    finally:
        stop(job)


def test_no_gpu_requested_or_none_visible_leaves_the_environment_alone(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert devices.claim_for_job(0, gpu_count=lambda: 4) == []
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert devices.claim_for_job(1, gpu_count=lambda: 0) == []  # a CPU machine: runs on the CPU
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_more_gpus_than_visible_is_an_error(tmp_path):
    with pytest.raises(devices.DeviceError, match=r"asks for 3 GPU\(s\) but 2 are visible \(\['0', '1'\]\)"):
        devices.claim_devices(3, ["0", "1"], directory=tmp_path)


def test_waiting_names_the_holders_and_can_time_out(tmp_path):
    held = devices.claim_devices(1, ["0"], directory=tmp_path)
    try:
        with pytest.raises(TimeoutError, match=rf"held by: 0: pid {os.getpid()} on "):
            devices.claim_devices(1, ["0"], directory=tmp_path, poll_s=0.05, timeout_s=0.2)
    finally:
        held.release()
    again = devices.claim_devices(1, ["0"], directory=tmp_path, timeout_s=0)
    assert again.devices == ["0"]
    again.release()
