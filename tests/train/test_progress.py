"""What a running job shows: progress lines with an ETA, the progress file, and TensorBoard
events read back with TensorBoard's own reader against the run's record."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

import pytest
from specs import CPU, make_spec

from ftcompare.train import JobFiles, Reporter, job_files, progress_path, steps, tensorboard_dir, train_run
from ftcompare.train import checkpoint as ckpt

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar event in a run's folder, duplicates and all (TensorBoard's reader with
    its purging of out-of-order steps off, so that a duplicate would show)."""
    accumulator = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.SCALARS: 0}, purge_orphaned_data=False
    )
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def reporter_for(tmp_path: Path, name: str, spec) -> Reporter:
    files = JobFiles(progress=tmp_path / name / "progress.json", tensorboard=tmp_path / "tb" / name)
    return Reporter(label=f"{spec.strategy}/seed0", kind="train", files=files, log_every=spec.log_every_steps)


def train(spec, tokenized, tmp_path: Path, name: str, reporter: Reporter):
    with reporter:
        result = train_run(
            spec=spec,
            tokenized_dir=tokenized,
            model_out_dir=tmp_path / name / "model",
            checkpoint_dir=tmp_path / name / "ckpt",
            device=CPU,
            reporter=reporter,
        )
        reporter.finish(result.status, result.reason)
    return result


def test_events_match_the_run_record(tiny_roberta, tiny_tokenized, tmp_path, caplog):
    spec = make_spec(tiny_roberta, "lora", epochs=2)
    reporter = reporter_for(tmp_path, "run", spec)
    with caplog.at_level(logging.INFO, logger="ftcompare.train.progress"):
        result = train(spec, tiny_tokenized, tmp_path, "run", reporter)
    assert result.status == "ok", result.reason
    found = events(tmp_path / "tb" / "run")
    loss = [(p["step"], p["loss"]) for p in result.loss_curve]
    assert [step for step, _ in found["train/loss"]] == [step for step, _ in loss]
    assert [value for _, value in found["train/loss"]] == pytest.approx([value for _, value in loss], rel=1e-6)
    assert [v for _, v in found["train/learning_rate"]] == pytest.approx([p["lr"] for p in result.loss_curve])
    assert found["validation/accuracy"] == [(p["step"], pytest.approx(p["accuracy"])) for p in result.val_curve]
    assert [s for s, _ in found["validation/loss"]] == [p["step"] for p in result.val_curve]
    assert all(value > 0 for _, value in found["train/tokens_per_s"])
    assert all(value > 0 for _, value in found["memory/rss_gb"])
    # The log: one plain line per log point, each with epoch, step/total, loss, tokens/s and an ETA.
    lines = [r.getMessage() for r in caplog.records if "  step " in r.getMessage()]
    for point in result.loss_curve:  # (a loaded machine may add lines between: one every 30 s)
        assert any(f"  step {point['step']}/50 " in line and f"loss {point['loss']:.4f}" in line for line in lines)
    assert lines[0].startswith("lora/seed0  epoch 0.04/2  step 1/50 (2%)  loss ")  # 50 steps: every one
    assert all("tok/s" in line and "ETA " in line and "\r" not in line for line in lines)
    assert "step 50/50 (100%)" in lines[-1]  # its ETA: the last validation, at the first one's length
    record = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert record["state"] == "ok" and record["step"] == record["total_steps"] == 50
    assert record["best_val_accuracy"] == result.metrics["best_val_accuracy"]
    assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()


def test_a_resumed_run_continues_its_curves_without_a_step_twice(tiny_roberta, small_tokenized, tmp_path, monkeypatch):
    spec = make_spec(tiny_roberta, "full", epochs=2, checkpoint_every_steps=3)
    whole = train(spec, small_tokenized, tmp_path, "whole", reporter_for(tmp_path, "whole", spec))

    # Killed in step 8 (epoch 2 of 5 steps each): the checkpoint is step 6's, and the events
    # run to step 7 with epoch 1's validation (a run this short logs every step).
    real_call = steps.TrainStep.__call__
    calls = []

    def step_then_die(self, batch):
        calls.append(1)
        if len(calls) == 8:
            raise SystemExit("killed")
        return real_call(self, batch)

    monkeypatch.setattr(steps.TrainStep, "__call__", step_then_die)
    with pytest.raises(SystemExit):
        train(spec, small_tokenized, tmp_path, "killed", reporter_for(tmp_path, "killed", spec))
    monkeypatch.setattr(steps.TrainStep, "__call__", real_call)
    assert [s for s, _ in events(tmp_path / "tb" / "killed")["train/loss"]] == list(range(1, 8))
    assert [s for s, _ in events(tmp_path / "tb" / "killed")["validation/loss"]] == [5]
    stopped = json.loads((tmp_path / "killed" / "progress.json").read_text())
    assert stopped["state"] == "stopped" and stopped["reason"] == "SystemExit: killed"
    assert ckpt.load_latest_checkpoint(tmp_path / "killed" / "ckpt")[0]["state"]["global_step"] == 6

    resumed = train(spec, small_tokenized, tmp_path, "killed", reporter_for(tmp_path, "killed", spec))
    assert resumed.metrics["resumed_from_steps"] == [6]
    got, want = events(tmp_path / "tb" / "killed"), events(tmp_path / "tb" / "whole")
    for tag in ("train/loss", "train/learning_rate", "validation/accuracy", "validation/loss"):
        steps_seen = [s for s, _ in got[tag]]
        assert steps_seen == sorted(set(steps_seen)), f"{tag}: a step twice: {steps_seen}"
        assert steps_seen == [s for s, _ in want[tag]]
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in want[tag]], rel=1e-5)
    # Writing events changed no training number.
    assert [p["loss"] for p in resumed.loss_curve] == pytest.approx([p["loss"] for p in whole.loss_curve], rel=1e-5)
    assert len(list((tmp_path / "tb" / "killed").glob("events.out.tfevents.*"))) == 1


def test_a_fresh_start_clears_a_stale_runs_events(tiny_roberta, tiny_tokenized, tmp_path):
    spec = make_spec(tiny_roberta, "lora")
    for _ in range(2):  # a rerun from scratch (e.g. a retry after a failure) writes to the same folder
        result = train(spec, tiny_tokenized, tmp_path, "run", reporter_for(tmp_path, "run", spec))
    steps_seen = [s for s, _ in events(tmp_path / "tb" / "run")["train/loss"]]
    assert steps_seen == [p["step"] for p in result.loss_curve]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_slow_run_logs_at_least_every_heartbeat_with_an_eta(caplog, tmp_path):
    clock = FakeClock()
    reporter = Reporter(label="full/seed0", kind="train", log_every=20, clock=clock)
    reads = []

    def window_loss() -> float:
        reads.append(1)  # a device sync in training: only when a line is due
        return 0.5

    with caplog.at_level(logging.INFO, logger="ftcompare.train.progress"):
        reporter.start_training(total_steps=100, epochs=2)
        for step in range(1, 11):  # 12 s per step: a line every 3 steps, none at the log points (20)
            clock.now += 12.0
            reporter.tick(step=step, epoch=step / 50, tokens=1000 * step, window_loss=window_loss)
    lines = [r.getMessage() for r in caplog.records if "  step " in r.getMessage()]
    assert len(lines) == 3 == len(reads)  # at steps 3, 6 and 9: every 36 s, the first step past each 30 s
    assert lines[0].startswith("full/seed0  epoch 0.06/2  step 3/100 (3%)  loss 0.5000  83 tok/s  elapsed 0:00:36")
    assert "ETA 0:19:24" in lines[0]  # 97 steps at 12 s, no validation measured yet


def test_inference_progress_counts_batches(caplog):
    clock = FakeClock()
    reporter = Reporter(label="full/seed0", kind="eval", log_every=4, clock=clock)
    with caplog.at_level(logging.INFO, logger="ftcompare.train.progress"):
        for done in range(1, 11):
            clock.now += 1.0
            reporter.batches(done, 10)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "full/seed0  test batch 4/10 (40%)  elapsed 0:00:03  test left 0:00:06",
        "full/seed0  test batch 8/10 (80%)  elapsed 0:00:07  test left 0:00:02",
    ]


def test_job_files_lie_beside_the_attempt_file_and_follow_the_switch(tmp_path):
    assert progress_path("results/runs/imdb/roberta-base/lora/seed0/attempt.json") == Path(
        "results/runs/imdb/roberta-base/lora/seed0/progress.json"
    )
    assert progress_path("results/runs/imdb/roberta-base/lora/seed0/eval-attempt.json").name == "eval-progress.json"
    wildcards = {"task": "sst2", "model": "bert", "strategy": "lora", "trial": "learning_rate=0.001", "seed": "0"}
    files = job_files(attempt="results/tuning/sst2/bert/trials/x/attempt.json", wildcards=wildcards, config={})
    assert files.tensorboard == Path("results/tensorboard/sst2/bert/lora/tuning/learning_rate=0.001/seed0")
    full = tensorboard_dir(task="imdb", model="roberta-base", strategy="full", seed=2)
    assert full == Path("results/tensorboard/imdb/roberta-base/full/seed2")
    off = job_files(attempt="a/attempt.json", wildcards=wildcards, config={"monitoring": {"tensorboard": False}})
    assert off.tensorboard is None and off.progress == Path("a/progress.json")


def test_the_progress_file_is_refreshed_by_a_heartbeat(tmp_path):
    files = JobFiles(progress=tmp_path / "progress.json")
    with Reporter(label="x", kind="train", files=files, heartbeat_s=0.05) as reporter:
        first = json.loads(files.progress.read_text())["updated_at"]
        time.sleep(0.3)
        later = json.loads(files.progress.read_text())
        reporter.finish("failed", "RuntimeError: CUDA out of memory.\nTried to allocate 2 GiB")
    assert later["updated_at"] > first and later["state"] == "running" and later["phase"] == "starting"
    final = json.loads(files.progress.read_text())
    assert final["state"] == "failed" and final["reason"] == "RuntimeError: CUDA out of memory."
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries
