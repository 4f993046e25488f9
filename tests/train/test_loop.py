"""Strategies, the training loop and its resilience: on CPU, with a tiny random RoBERTa."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from specs import CPU, make_spec

from ftcompare.data import epoch_batches, load_tokenized
from ftcompare.model import build as models
from ftcompare.train import checkpoint as ckpt
from ftcompare.train import loop as training
from ftcompare.train import steps, train_run

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_gradient_checkpointing_trains_to_the_same_numbers(tiny_roberta, small_tokenized, tmp_path, monkeypatch):
    # Dropout is on: the recomputed forward must replay the same masks.
    turned_on = []
    real = models._recompute_activations
    monkeypatch.setattr(models, "_recompute_activations", lambda model: (turned_on.append(1), real(model)))
    plain = run(make_spec(tiny_roberta, "lora"), small_tokenized, tmp_path, "plain")
    assert turned_on == []
    checkpointed = run(make_spec(tiny_roberta, "lora", gradient_checkpointing=True), small_tokenized, tmp_path, "gc")
    assert turned_on == [1]  # the run really recomputed
    assert plain.status == checkpointed.status == "ok", (plain.reason, checkpointed.reason)
    assert [p["loss"] for p in checkpointed.loss_curve] == pytest.approx(
        [p["loss"] for p in plain.loss_curve], rel=1e-5
    )
    assert_curves_close(checkpointed.val_curve, plain.val_curve)


def assert_curves_close(actual: list[dict], expected: list[dict], rel: float = 1e-5) -> None:
    """Curve points (flat dicts of numbers) equal to `rel`; pytest.approx takes no nested data."""
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        assert got == pytest.approx(want, rel=rel)


def run(spec, tokenized, tmp_path: Path, name: str):
    return train_run(
        spec=spec,
        tokenized_dir=tokenized,
        model_out_dir=tmp_path / name / "model",
        checkpoint_dir=tmp_path / name / "ckpt",
        device=CPU,
    )


def test_training_records_metrics_and_is_deterministic(tiny_roberta, small_tokenized, tmp_path):
    spec = make_spec(tiny_roberta, "lora", epochs=2)
    first = run(spec, small_tokenized, tmp_path, "a")
    second = run(spec, small_tokenized, tmp_path, "b")
    assert first.status == "ok", first.reason
    metrics = first.metrics
    assert metrics["optimizer_steps"] == 2 * 5  # 80 reviews / batch 16, two epochs
    assert metrics["train_tokens"] > 0 and metrics["tokens_per_s"] > 0
    assert metrics["peak_rss_gb"] > 0 and metrics["peak_gpu_mem_allocated_gb"] is None
    assert metrics["adapter_size_mb"] > 0
    assert [v["epoch"] for v in first.val_curve] == [1, 2]
    assert [p["step"] for p in first.loss_curve] == list(range(1, 11))  # 10 steps: a point each
    # Same config and seed on CPU: the same numbers, exactly.
    assert first.loss_curve == second.loss_curve
    assert first.val_curve == second.val_curve
    assert not (tmp_path / "a" / "ckpt").exists()  # a finished run keeps no checkpoints


def test_resume_after_kill_matches_uninterrupted_run(tiny_roberta, small_tokenized, tmp_path, monkeypatch, caplog):
    # A token budget that binds (8 reviews of 64 tokens): the resumed run must rebuild
    # the same variable-size batches.
    spec = make_spec(tiny_roberta, "full", epochs=2, checkpoint_every_steps=3, max_tokens_per_batch=512)
    uninterrupted = run(spec, small_tokenized, tmp_path, "whole")
    assert uninterrupted.metrics["mean_reviews_per_step"] < spec.batch_size  # the budget binds

    # Simulate a SIGKILL right after the third checkpoint (step 9, near the end of epoch 1's ~10).
    real_save = ckpt.save_checkpoint
    saves = []

    def save_then_die(state, *, directory, step):
        path = real_save(state, directory=directory, step=step)
        saves.append(step)
        if len(saves) == 3:
            raise SystemExit("killed")
        return path

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(SystemExit):
        run(spec, small_tokenized, tmp_path, "killed")
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    assert saves == [3, 6, 9]
    saved_peak = ckpt.load_latest_checkpoint(tmp_path / "killed" / "ckpt")[0]["state"]["peak_memory"]["peak_rss_gb"]
    assert saved_peak > 0.01

    # The rerun is a new process whose own peak is tiny: the record must keep the earlier one.
    fresh_process = types.SimpleNamespace(ru_maxrss=1)  # KiB
    monkeypatch.setattr("ftcompare.model.device.resource.getrusage", lambda who: fresh_process)
    with caplog.at_level(logging.WARNING, logger="ftcompare.train.loop"):
        resumed = run(spec, small_tokenized, tmp_path, "killed")
    assert resumed.metrics["peak_rss_gb"] == saved_peak
    assert "resumed from step 9" in caplog.text
    assert resumed.metrics["resumed_from_steps"] == [9]
    assert_curves_close(resumed.val_curve, uninterrupted.val_curve)
    assert [p["loss"] for p in resumed.loss_curve] == pytest.approx(
        [p["loss"] for p in uninterrupted.loss_curve], rel=1e-5
    )
    assert resumed.metrics["optimizer_steps"] == uninterrupted.metrics["optimizer_steps"]


def test_adalora_resumes_with_its_rank_allocation(tiny_roberta, tiny_tokenized, tmp_path, monkeypatch):
    # AdaLoRA's importance scores and rank pattern live outside its weights: a resumed run
    # must restore them to continue as the uninterrupted one (ranks masked by importance).
    entry = {"method": "adalora", "learning_rate": 5.0e-3}
    spec = make_spec(tiny_roberta, "adalora", entry, epochs=2, checkpoint_every_steps=20)
    uninterrupted = run(spec, tiny_tokenized, tmp_path, "whole")
    assert uninterrupted.status == "ok", uninterrupted.reason
    real_save = ckpt.save_checkpoint
    saves = []

    def save_then_die(state, *, directory, step):
        path = real_save(state, directory=directory, step=step)
        saves.append(step)
        if step == 20:
            raise SystemExit("killed")
        return path

    monkeypatch.setattr(ckpt, "save_checkpoint", save_then_die)
    with pytest.raises(SystemExit):
        run(spec, tiny_tokenized, tmp_path, "killed")
    monkeypatch.setattr(ckpt, "save_checkpoint", real_save)
    state = ckpt.load_latest_checkpoint(tmp_path / "killed" / "ckpt")[0]["method_state"]
    assert state["step"] == 20 and state["exp_avg_ipt"]  # mid-budget: scores accumulated
    resumed = run(spec, tiny_tokenized, tmp_path, "killed")
    assert resumed.metrics["resumed_from_steps"] == [20]
    # Exactly: with the scores reset instead, the losses after step 20 differ in the 7th digit.
    assert resumed.loss_curve == uninterrupted.loss_curve
    assert resumed.val_curve == uninterrupted.val_curve


def test_token_budget_sets_steps_and_learning_rate(tiny_roberta, small_tokenized, tmp_path):
    spec = make_spec(tiny_roberta, "lora", epochs=2, batch_size=16, max_tokens_per_batch=256)
    lengths = load_tokenized(small_tokenized, splits=("train",)).splits["train"].lengths
    plan = [
        epoch_batches(
            lengths, batch_size=16, seed=0, epoch=epoch, group_by_length=True, max_tokens=256, pad_to_multiple_of=8
        )
        for epoch in range(2)
    ]
    n_steps = sum(len(batches) for batches in plan)
    assert n_steps > 2 * 5  # the budget binds: more, smaller steps than fixed batches of 16

    result = run(spec, small_tokenized, tmp_path, "budget")
    assert result.status == "ok", result.reason
    metrics = result.metrics
    assert metrics["optimizer_steps"] == n_steps
    assert metrics["mean_reviews_per_step"] == pytest.approx(2 * len(lengths) / n_steps)
    # The rate follows the mean batch, not the cap of 16 reviews.
    assert metrics["effective_learning_rate"] == pytest.approx(
        spec.learning_rate * (metrics["mean_reviews_per_step"] / spec.lr_reference_batch_size) ** 0.5
    )
    assert result.loss_curve[-1]["epoch"] == pytest.approx(2.0)

    fixed = run(
        make_spec(tiny_roberta, "lora", epochs=2, max_tokens_per_batch=None), small_tokenized, tmp_path, "fixed"
    )
    assert fixed.metrics["optimizer_steps"] == 2 * 5
    assert fixed.metrics["effective_learning_rate"] == pytest.approx(spec.learning_rate * (16 / 32) ** 0.5)


def test_checkpoint_from_other_settings_is_not_resumed(tiny_roberta, tiny_tokenized, tmp_path, caplog):
    spec = make_spec(tiny_roberta, "lora")
    ckpt.save_checkpoint({"spec": {**spec.to_dict(), "learning_rate": 1.0}}, directory=tmp_path / "x" / "ckpt", step=3)
    with caplog.at_level(logging.WARNING):
        result = run(spec, tiny_tokenized, tmp_path, "x")
    assert result.status == "ok"
    assert "other settings (['learning_rate'])" in caplog.text
    assert "resumed_from_steps" in result.metrics and result.metrics["resumed_from_steps"] == []


def test_out_of_memory_is_recorded_not_raised(tiny_roberta, tiny_tokenized, tmp_path, monkeypatch):
    from transformers.models.roberta import modeling_roberta

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(modeling_roberta.RobertaForSequenceClassification, "forward", out_of_memory)
    result = run(make_spec(tiny_roberta, "full"), tiny_tokenized, tmp_path, "oom")
    assert result.status == "failed"
    assert result.reason.startswith("OutOfMemoryError: CUDA out of memory")


def test_unavailable_strategy_is_skipped(tiny_roberta, tiny_tokenized, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    result = run(make_spec(tiny_roberta, "qlora"), tiny_tokenized, tmp_path, "q")
    assert result.status == "skipped"
    assert "bitsandbytes cannot be imported" in result.reason


# --- checkpoint files ---------------------------------------------------------------


# --- preemption -----------------------------------------------------------------------

PREEMPTIBLE_JOB = textwrap.dedent(
    """
    import sys
    from ftcompare.contract import setup_logging
    from ftcompare.train import finetune_job
    from ftcompare.methods import RunSpec
    from ftcompare.train import Preempted
    import json
    setup_logging(sys.argv[2])
    spec = RunSpec.from_dict(json.loads(open(sys.argv[1]).read()))
    try:
        finetune_job(spec=spec, tokenized_dir=sys.argv[3], model_dir=sys.argv[4] + "/model",
                      record_path=sys.argv[4] + "/train.json", checkpoint_dir=sys.argv[4] + "/ckpt",
                      attempt_path=sys.argv[4] + "/attempt.json", retry_marker="first")
    except Preempted:
        sys.exit(143)
    """
)


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes(tiny_roberta, tiny_tokenized, tmp_path):
    import json

    spec = make_spec(tiny_roberta, "full", epochs=30, batch_size=4, log_every_steps=1)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec.to_dict()))
    script = tmp_path / "job.py"
    script.write_text(PREEMPTIBLE_JOB)
    log_path, out = tmp_path / "job.log", tmp_path / "run"
    args = [sys.executable, str(script), str(spec_path), str(log_path), str(tiny_tokenized), str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    process = subprocess.Popen(args, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "step 3/" not in (log_path.read_text() if log_path.exists() else ""):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    assert "SIGTERM: checkpoint saved" in log_path.read_text()
    assert ckpt.latest_paths(out / "ckpt"), "no checkpoint after SIGTERM"
    assert not (out / "train.json").exists()

    # The rerun with the same settings resumes from that checkpoint.
    process = subprocess.Popen(args, env=env)
    while time.monotonic() < deadline + 60 and "resumed from step" not in log_path.read_text():
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)  # no need to finish 30 epochs: resuming is the point
    assert process.wait(timeout=60) == 143
    assert "resumed from step" in log_path.read_text()


def test_checkpoint_that_does_not_fit_the_model_is_not_resumed(tiny_roberta, tiny_tokenized, tmp_path, caplog):
    spec = make_spec(tiny_roberta, "lora")
    ckpt.save_checkpoint(
        {"spec": spec.to_dict(), "precision": "fp32", "trainable": {"no.such.parameter": torch.zeros(2)}},
        directory=tmp_path / "y" / "ckpt",
        step=3,
    )
    with caplog.at_level(logging.WARNING):
        result = run(spec, tiny_tokenized, tmp_path, "y")
    assert result.status == "ok" and result.metrics["resumed_from_steps"] == []
    assert "is corrupt (not a training checkpoint: it lacks ['state', 'optimizer', 'scheduler', 'rng'])" in caplog.text


def test_checkpoint_that_does_not_fit_is_moved_aside_and_an_older_one_resumed(
    tiny_roberta, tiny_tokenized, tmp_path, caplog
):
    spec = make_spec(tiny_roberta, "full", checkpoint_every_steps=4, epochs=1)
    directory = tmp_path / "z" / "ckpt"
    real_save = ckpt.save_checkpoint
    saved = []

    def save_then_stop(state, *, directory, step):
        path = real_save(state, directory=directory, step=step)
        saved.append(path)
        if len(saved) == 1:
            raise SystemExit("killed")
        return path

    import unittest.mock

    with unittest.mock.patch.object(ckpt, "save_checkpoint", save_then_stop), pytest.raises(SystemExit):
        run(spec, tiny_tokenized, tmp_path, "z")
    good = torch.load(saved[0], weights_only=True)
    wrong = {**good, "trainable": {name: torch.zeros(3) for name in good["trainable"]}}
    ckpt.save_checkpoint(wrong, directory=directory, step=8)  # newer, same settings, wrong shapes
    with caplog.at_level(logging.WARNING):
        result = run(spec, tiny_tokenized, tmp_path, "z")
    assert result.status == "ok" and result.metrics["resumed_from_steps"] == [4]
    assert "step-000000008.pt is corrupt (its parameters do not fit this model" in caplog.text


def test_a_planted_checkpoint_never_runs_its_code(tiny_roberta, tiny_tokenized, tmp_path, caplog):
    """A pickle whose __reduce__ calls os.system, with a matching checksum, in the run's checkpoint folder."""
    spec = make_spec(tiny_roberta, "full")
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    directory = tmp_path / "p" / "ckpt"

    def plant() -> Path:
        path = ckpt.save_checkpoint(
            {"spec": spec.to_dict(), "precision": "fp32", "payload": Payload()}, directory=directory, step=99
        )
        assert path.with_suffix(".sha256").read_text() == ckpt._digest(path)  # the checksum matches
        return path

    planted = plant()
    with caplog.at_level(logging.WARNING):
        assert ckpt.load_latest_checkpoint(directory) is None
    assert "step-000000099.pt is corrupt (not loadable as plain data: UnpicklingError" in caplog.text
    assert not planted.exists() and (directory / "step-000000099.pt.corrupt").is_file()  # set aside for good
    assert ckpt.load_latest_checkpoint(directory) is None
    assert not marker.exists(), "the planted checkpoint's payload ran"

    plant()  # and through a real run, which then trains from scratch
    result = run(spec, tiny_tokenized, tmp_path, "p")
    assert result.status == "ok" and result.metrics["resumed_from_steps"] == []
    assert not marker.exists(), "the planted checkpoint's payload ran"


def poison_step(monkeypatch, *, at_call: int, value: float = math.nan, weights: bool = False) -> list[int]:
    """From call `at_call` on, the training step returns `value` as its loss (or, with
    `weights`, leaves one weight non-finite and returns its real loss). Returns the calls
    made, so that a test can see where training stopped."""
    real_call = steps.TrainStep.__call__
    calls: list[int] = []

    def step(self, batch):
        calls.append(len(calls) + 1)
        loss = real_call(self, batch)
        if len(calls) >= at_call:
            if weights:
                with torch.no_grad():
                    self.trainable[0].view(-1)[0] = value
            else:
                loss = torch.full_like(loss, value)
        return loss

    monkeypatch.setattr(steps.TrainStep, "__call__", step)
    return calls


@pytest.mark.parametrize(("value", "word"), [(math.nan, "NaN"), (math.inf, "infinite")], ids=["nan", "inf"])
def test_non_finite_loss_fails_the_run_within_log_every_steps(
    tiny_roberta, tiny_tokenized, tmp_path, monkeypatch, value, word
):
    calls = poison_step(monkeypatch, at_call=7, value=value)
    # The loss is read every log_every_steps here, not every step as a run this short logs.
    monkeypatch.setattr(training, "CURVE_POINTS", 0)
    result = run(make_spec(tiny_roberta, "full", log_every_steps=5), tiny_tokenized, tmp_path, "nan")
    assert result.status == "failed"
    assert result.reason.startswith(f"diverged: training loss became {word} between steps 6 and 10 of 25 ")
    assert "learning_rate 2e-05" in result.reason and "max_grad_norm 1)" in result.reason
    assert len(calls) == 10  # stopped at the first log point after the bad step, not at the epoch's end
    last = result.loss_curve[-1]
    assert (last["step"], last["epoch"], last["loss"]) == (10, 0.4, None) and result.val_curve == []
    assert not (tmp_path / "nan" / "model" / "model.safetensors").exists()


def test_diverged_run_record_is_strict_json_with_status_failed(tiny_roberta, tiny_tokenized, tmp_path, monkeypatch):
    import json

    from ftcompare.train import finetune_job

    poison_step(monkeypatch, at_call=3)
    spec = make_spec(tiny_roberta, "full", log_every_steps=5)
    record_path = tmp_path / "run" / "train.json"
    finetune_job(
        spec=spec,
        tokenized_dir=tiny_tokenized,
        model_dir=tmp_path / "run" / "model",
        record_path=record_path,
        checkpoint_dir=tmp_path / "run" / "ckpt",
        attempt_path=tmp_path / "run" / "attempt.json",
        retry_marker="first",
    )

    def no_constants(name):
        raise AssertionError(f"{record_path} holds {name}, which is not JSON")

    record = json.loads(record_path.read_text(), parse_constant=no_constants)
    assert record["status"] == "failed" and "training loss became NaN" in record["reason"]
    assert record["loss_curve"][-1]["loss"] is None


def test_checkpoints_never_hold_diverged_weights(tiny_roberta, tiny_tokenized, tmp_path, monkeypatch):
    # The weights break in step 3 while its loss is still finite: the checkpoint due after it must not be written.
    poison_step(monkeypatch, at_call=3, weights=True)
    spec = make_spec(tiny_roberta, "full", log_every_steps=5, checkpoint_every_steps=3)
    result = run(spec, tiny_tokenized, tmp_path, "w")
    assert result.status == "failed"
    assert result.reason.startswith("diverged: weights became non-finite by step 3 (1 tensors, e.g. ")
    assert ckpt.latest_paths(tmp_path / "w" / "ckpt") == []


def constant_logits(monkeypatch, row: list[float]) -> None:
    def predict(model, split, **kwargs):
        return np.tile(np.asarray(row, dtype=np.float32), (len(split), 1))

    monkeypatch.setattr(training, "predict_logits", predict)


def test_one_class_for_every_validation_review_is_flagged(tiny_roberta, tiny_tokenized, tmp_path, monkeypatch):
    constant_logits(monkeypatch, [-3.0, 3.0])
    result = run(make_spec(tiny_roberta, "lora"), tiny_tokenized, tmp_path, "flat")
    assert result.status == "ok"
    assert result.metrics["degenerate_validation"] == "all 100 validation predictions are class 1"
    assert result.val_curve[0]["predicted_classes"] == 1


def test_the_best_epoch_is_chosen_on_the_tasks_metric(tiny_roberta, tiny_tokenized, tmp_path, monkeypatch):
    # Epoch 1 errs on 28% of each class; epoch 2 on 60% of the positives alone. On a
    # balanced split epoch 1 has the higher accuracy (0.72 vs 0.70), epoch 2 the higher
    # MCC (0.5 vs 0.44): the choice must follow the metric the spec names.
    from ftcompare.contract import score

    labels = load_tokenized(tiny_tokenized, splits=("validation",)).splits["validation"].labels
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    balanced_errors, positive_errors = labels.copy(), labels.copy()
    for index in (*positives[: round(0.28 * len(positives))], *negatives[: round(0.28 * len(negatives))]):
        balanced_errors[index] = 1 - labels[index]
    positive_errors[positives[: round(0.6 * len(positives))]] = 0
    by_epoch = [balanced_errors, positive_errors]
    accuracies = [score("accuracy", labels, p, num_labels=2) for p in by_epoch]
    mccs = [score("mcc", labels, p, num_labels=2) for p in by_epoch]
    assert accuracies[0] > accuracies[1] and mccs[1] > mccs[0]  # the case is what it says

    def predict(model, split, **kwargs):
        epoch = predict.calls % 2
        predict.calls += 1
        return np.eye(2, dtype=np.float32)[by_epoch[epoch]] * 4 - 2

    chosen = {}
    for metric in ("accuracy", "mcc"):
        predict.calls = 0
        monkeypatch.setattr(training, "predict_logits", predict)
        spec = dataclasses.replace(make_spec(tiny_roberta, "lora", epochs=2), metric=metric)
        result = run(spec, tiny_tokenized, tmp_path, metric)
        assert result.status == "ok", result.reason
        chosen[metric] = result.metrics
        # Every metric of every epoch is recorded, whatever the primary one.
        assert [point["mcc"] for point in result.val_curve] == pytest.approx(mccs)
        assert [point["accuracy"] for point in result.val_curve] == pytest.approx(accuracies)
        assert {"macro_f1", "f1"} <= set(result.val_curve[0])
    assert chosen["accuracy"]["best_epoch"] == 1 and chosen["mcc"]["best_epoch"] == 2
    assert chosen["mcc"]["best_val_metric"] == "mcc"
    assert chosen["mcc"]["best_val_score"] == pytest.approx(mccs[1])
    assert chosen["mcc"]["best_val_accuracy"] == pytest.approx(accuracies[1])  # the chosen epoch's
    assert (
        chosen["accuracy"]["best_val_score"] == chosen["accuracy"]["best_val_accuracy"] == pytest.approx(accuracies[0])
    )


def test_non_finite_validation_logits_fail_the_run(tiny_roberta, tiny_tokenized, tmp_path, monkeypatch):
    constant_logits(monkeypatch, [math.nan, 0.0])
    result = run(make_spec(tiny_roberta, "lora"), tiny_tokenized, tmp_path, "nanval")
    assert result.status == "failed"
    assert result.reason.startswith("diverged: validation logits are not finite after epoch 1 (step 25)")


def test_evaluation_of_non_finite_logits_fails(tiny_roberta, tiny_tokenized, tmp_path, monkeypatch):
    from ftcompare.evaluate import scoring as evaluation

    spec = make_spec(tiny_roberta, "lora")
    assert run(spec, tiny_tokenized, tmp_path, "ev").status == "ok"
    monkeypatch.setattr(evaluation, "predict_logits", lambda model, split, **kw: np.full((len(split), 2), np.nan))
    result = evaluation.evaluate_run(
        spec=spec, tokenized_dir=tiny_tokenized, model_dir=tmp_path / "ev" / "model", device=CPU
    )
    assert result.status == "failed"
    assert result.reason == "diverged: the model's logits are not finite for 200 of 200 test reviews"


def test_a_target_module_typo_fails_the_run_before_it_trains(tiny_roberta, tiny_tokenized, tmp_path, monkeypatch):
    # Where preflight cannot look (a hub model), the job checks the same before training.
    calls = poison_step(monkeypatch, at_call=10**9)
    spec = dataclasses.replace(
        make_spec(tiny_roberta, "lora"),
        blocks={"lora": {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": ["query", "vlaue"]}},
    )
    result = run(spec, tiny_tokenized, tmp_path, "typo")
    assert result.status == "failed" and calls == []
    assert "strategies.lora.lora.target_modules: 'vlaue' matches no module of" in result.reason
    assert "did you mean 'value'?" in result.reason


@pytest.mark.parametrize("strategy", ["full", "ia3"])
def test_evaluation_measures_inference_cost_and_merged_where_it_can(tiny_roberta, tiny_tokenized, tmp_path, strategy):
    from ftcompare.evaluate import scoring as evaluation

    spec = make_spec(tiny_roberta, strategy)
    assert run(spec, tiny_tokenized, tmp_path, "cost").status == "ok"
    result = evaluation.evaluate_run(
        spec=spec, tokenized_dir=tiny_tokenized, model_dir=tmp_path / "cost" / "model", device=CPU
    )
    assert result.status == "ok", result.reason
    metrics = result.metrics
    assert metrics["latency_reviews"] == 100  # of the 200 test reviews
    assert 0 < metrics["latency_p50_ms"] <= metrics["latency_p95_ms"]
    if strategy == "full":  # nothing to merge, and no error either
        assert not [key for key in metrics if key.startswith("merged")]
        return
    assert metrics["merged_eval_reviews_per_s"] > 0
    assert 0 < metrics["merged_latency_p50_ms"] <= metrics["merged_latency_p95_ms"]
    # On a CPU in fp32 the merged model's predictions are the adapter's, to float rounding.
    assert metrics["merged_agreement"] == 1.0 and metrics["merged_max_prob_diff"] < 1e-5


@pytest.mark.parametrize(
    ("total_steps", "log_every", "expected"),
    [(20, 20, 1), (49, 5, 1), (100, 20, 2), (1000, 20, 20), (5000, 20, 20), (300, 5, 5), (300, 20, 6)],
)
def test_short_runs_log_often_enough_for_a_curve(total_steps, log_every, expected):
    interval = training.log_interval(total_steps, log_every)
    assert interval == expected
    # At least CURVE_POINTS points, or every step of a run with fewer steps; never rarer than asked.
    assert total_steps // interval >= min(training.CURVE_POINTS, total_steps) and interval <= log_every


def test_a_run_of_fewer_steps_than_curve_points_logs_every_step(tiny_roberta, tiny_tokenized, tmp_path):
    result = run(make_spec(tiny_roberta, "lora", log_every_steps=20), tiny_tokenized, tmp_path, "short")
    assert result.status == "ok", result.reason
    assert [p["step"] for p in result.loss_curve] == list(range(1, 26))  # 400 reviews / 16: 25 steps


def test_a_run_at_another_length_than_its_tokenized_data_is_refused_naming_both(tiny_roberta, tiny_tokenized, tmp_path):
    # The cache is the one truth of the length it was cut at: a run believing another would record it.
    import json

    from specs import make_spec

    from ftcompare.contract import ConfigError
    from ftcompare.evaluate import evaluate_job
    from ftcompare.train import finetune_job

    spec = make_spec(tiny_roberta, "lora", max_length=32)  # tiny_tokenized was cut at 64
    message = rf"training.max_length = 32, but its tokenized data '{tiny_tokenized}' was cut at 64 tokens"
    with pytest.raises(ConfigError, match=message):
        finetune_job(
            spec=spec,
            tokenized_dir=tiny_tokenized,
            model_dir=tmp_path / "model",
            record_path=tmp_path / "train.json",
            checkpoint_dir=tmp_path / "ckpt",
            attempt_path=tmp_path / "attempt.json",
            retry_marker="first",
        )
    assert not (tmp_path / "train.json").exists()
    train = {"kind": "train", "strategy": "lora", "seed": 0, "status": "ok", "reason": None, "config": spec.to_dict()}
    (tmp_path / "train.json").write_text(json.dumps(train))
    with pytest.raises(ConfigError, match=message):
        evaluate_job(
            train_record_path=tmp_path / "train.json",
            tokenized_dir=tiny_tokenized,
            model_dir=tmp_path / "model",
            record_path=tmp_path / "eval.json",
            predictions_path=tmp_path / "predictions.parquet",
        )
    assert not (tmp_path / "eval.json").exists()
