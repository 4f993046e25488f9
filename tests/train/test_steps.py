"""The training step: eager, and the CUDA-graph path's bookkeeping checked on the CPU.

CUDA graphs themselves need a GPU (bench/gpu_check.sh runs them there). What the CPU can
check is everything around the recording: gradients and Adam's state in fixed places,
the rate as a tensor the scheduler fills, Adam's state created without moving a weight,
the warm-up's random draws given back, and a failed recording falling back to eager
steps. A stand-in recorder that replays by calling the step body does that here.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from specs import make_spec

from ftcompare.data import TrainBatching, load_tokenized
from ftcompare.methods import RunSpec
from ftcompare.model import build_model, peak_memory, resolve_precision
from ftcompare.train import TrainStep, build_optimizer, current_lr, setup_training

CPU = torch.device("cpu")


class CallingRecorder:
    """Stands in for CUDA graph recording on the CPU: warms up by calling, replays by calling."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.recorded = fail, 0

    def warm(self, fn):
        fn()

    def release_cache(self):
        pass

    def capture(self, fn):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.recorded += 1
        return type("Replay", (), {"replay": staticmethod(fn)})()


def train(spec, tokenized, *, steps: int, recorder=None):
    """`steps` steps of bucketed batches, set up as a run's (graphs with `recorder`);
    returns (losses, trainable weights, lr after, the step)."""
    data = load_tokenized(tokenized, splits=("train",))
    split = data.splits["train"]
    batching = TrainBatching.from_spec(spec)
    batches = batching.epoch(split.lengths, seed=0, epoch=0)[:steps]
    torch.manual_seed(0)
    # A schedule twice as long as the steps taken: the rate after them is not yet zero.
    setup = setup_training(
        dataclasses.replace(spec, learning_rate=1e-3, warmup_ratio=0.25, cuda_graphs=recorder is not None),
        num_labels=2,
        device=CPU,
        total_steps=2 * steps,
        reviews_per_step=spec.batch_size,
        recorder=recorder,
    )
    torch.manual_seed(1)  # dropout draws from here on
    losses = [float(setup.step(batching.collate(split, b, pad_token_id=data.pad_token_id))) for b in batches]
    return losses, {n: p.detach().clone() for n, p in setup.trainable}, current_lr(setup.scheduler), setup.step


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_replayed_steps_equal_eager_steps(tiny_roberta, tiny_tokenized, strategy):
    spec = dataclasses.replace(make_spec(tiny_roberta, strategy, max_tokens_per_batch=512), bucket_width=16)
    eager_losses, eager_weights, eager_lr, _ = train(spec, tiny_tokenized, steps=8)
    recorder = CallingRecorder()
    graph_losses, graph_weights, graph_lr, step = train(spec, tiny_tokenized, steps=8, recorder=recorder)
    # Dropout is on: equal losses mean the warm-up's draws were given back and every
    # replay drew what the eager step drew.
    assert graph_losses == pytest.approx(eager_losses, rel=1e-5)
    for name, weight in eager_weights.items():
        torch.testing.assert_close(graph_weights[name], weight, rtol=1e-5, atol=1e-6, msg=name)
    assert graph_lr == pytest.approx(eager_lr)
    shapes = 4  # widths 16..64 in buckets of 16 at max_length 64
    assert 1 <= recorder.recorded == step.graph_shapes <= shapes
    assert step.describe() == {"requested": True, "used": True, "shapes": recorder.recorded, "fallback_reason": None}
    assert not any(
        torch.equal(graph_weights[n], w)
        for n, w in train(spec, tiny_tokenized, steps=0)[1].items()
        if n.endswith("weight") and "classifier" in n
    )  # (the steps did train)


def test_adam_state_is_made_without_moving_a_weight(tiny_roberta, tiny_tokenized):
    spec = dataclasses.replace(make_spec(tiny_roberta, "full", max_tokens_per_batch=512), bucket_width=16)
    _, before, _, _ = train(spec, tiny_tokenized, steps=0)
    _, after, _, step = train(spec, tiny_tokenized, steps=0, recorder=CallingRecorder())
    step._prepare_graphs()
    assert all(torch.equal(after[n], w) for n, w in before.items())
    states = list(step.optimizer.state.values())
    assert states and all(float(s["step"]) == 0 and not s["exp_avg"].any() for s in states)
    assert all(isinstance(g["lr"], torch.Tensor) for g in step.optimizer.param_groups)


def test_failed_recording_falls_back_to_eager_steps(tiny_roberta, tiny_tokenized):
    spec = dataclasses.replace(make_spec(tiny_roberta, "lora", max_tokens_per_batch=512), bucket_width=16)
    eager_losses, eager_weights, _, _ = train(spec, tiny_tokenized, steps=4)
    losses, weights, _, step = train(spec, tiny_tokenized, steps=4, recorder=CallingRecorder(fail=True))
    described = step.describe()
    assert described["requested"] and not described["used"] and described["shapes"] == 0
    assert "not permitted when stream is capturing" in described["fallback_reason"]
    # The failed attempt's warm-up left no gradient behind and drew nothing that counts.
    assert losses == pytest.approx(eager_losses, rel=1e-5)
    for name, weight in eager_weights.items():
        torch.testing.assert_close(weights[name], weight, rtol=1e-5, atol=1e-6, msg=name)


def test_a_method_step_a_graph_cannot_hold_trains_eagerly_and_says_why(tiny_roberta, tiny_tokenized):
    # AdaLoRA re-allocates its ranks after every optimizer step: no graph is recorded, the
    # steps equal eager ones, and the allocation ran after each (PEFT masks ranks by then).
    entry = {"method": "adalora", "adalora": {"initial_phase": 0.0, "final_phase": 0.5}}
    spec = dataclasses.replace(make_spec(tiny_roberta, "adalora", entry, max_tokens_per_batch=512), bucket_width=16)
    eager_losses, eager_weights, _, _ = train(spec, tiny_tokenized, steps=6)
    recorder = CallingRecorder()
    losses, weights, _, step = train(spec, tiny_tokenized, steps=6, recorder=recorder)
    described = step.describe()
    assert described["requested"] and not described["used"] and recorder.recorded == 0
    assert "AdaLoRA re-allocates ranks after every optimizer step" in described["fallback_reason"]
    assert step.after_step.step == 6  # update_and_allocate ran once per step
    assert losses == pytest.approx(eager_losses, rel=1e-5)
    for name, weight in eager_weights.items():
        torch.testing.assert_close(weights[name], weight, rtol=1e-5, atol=1e-6, msg=name)
    # By the final phase the budget (target_r 8 of init_r 12 on average) has masked ranks.
    singular_values = [w for n, w in weights.items() if "lora_E" in n]
    assert sum(int((w == 0).sum()) for w in singular_values) > 0


def test_graphs_are_not_used_on_a_cpu_without_a_recorder(tiny_roberta, tiny_tokenized):
    spec = dataclasses.replace(make_spec(tiny_roberta, "lora", max_tokens_per_batch=512), bucket_width=16)
    precision = resolve_precision(requested="auto", method="lora", device=CPU)
    model = build_model(spec=spec, num_labels=2, device=CPU, precision=precision)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = build_optimizer(trainable, weight_decay=0.0, learning_rate=1e-3, device=CPU)
    step = TrainStep(
        model=model,
        optimizer=optimizer,
        scheduler=None,
        trainable=[p for _, p in trainable],
        max_grad_norm=None,
        device=CPU,
        precision=precision,
        cuda_graphs=True,
    )
    data = load_tokenized(tiny_tokenized, splits=("train",))
    batching = TrainBatching.from_spec(spec)
    loss = step(batching.collate(data.splits["train"], np.arange(4), pad_token_id=data.pad_token_id))
    assert torch.isfinite(loss) and step.describe()["used"] is False and step.describe()["fallback_reason"] is None


def test_peak_memory_keeps_the_earlier_processes_peak():
    earlier = {"peak_gpu_mem_allocated_gb": None, "peak_gpu_mem_reserved_gb": None, "peak_rss_gb": 1e6}
    assert peak_memory(CPU, earlier=earlier)["peak_rss_gb"] == 1e6
    now = peak_memory(CPU)["peak_rss_gb"]
    assert 0 < now < 1e6
    assert peak_memory(CPU, earlier=None)["peak_gpu_mem_allocated_gb"] is None
    # An earlier process's GPU peak is kept where this one has none; missing ones stay missing.
    gpu_before = {"peak_gpu_mem_allocated_gb": 3.0, "peak_gpu_mem_reserved_gb": None, "peak_rss_gb": None}
    merged = peak_memory(CPU, earlier=gpu_before)
    assert merged["peak_gpu_mem_allocated_gb"] == 3.0 and merged["peak_gpu_mem_reserved_gb"] is None
    assert merged["peak_rss_gb"] is not None and merged["peak_rss_gb"] > 0  # this process's own


def test_the_applied_learning_rate_scales_by_the_square_root_of_the_batch() -> None:
    from ftcompare.plan import checked_config, load_config, resolve_run
    from ftcompare.train import applied_learning_rate

    spec = resolve_run(checked_config(load_config()), strategy="full", seed=0)
    fixed32 = RunSpec.from_dict({**spec.to_dict(), "batch_size": 32, "max_tokens_per_batch": None})
    assert fixed32.lr_reference_batch_size == 32
    assert applied_learning_rate(fixed32) == pytest.approx(2.0e-5)
    bigger = RunSpec.from_dict({**fixed32.to_dict(), "batch_size": 64})
    assert applied_learning_rate(bigger) == pytest.approx(2.0e-5 * math.sqrt(2), rel=1e-12)
    smaller = RunSpec.from_dict({**fixed32.to_dict(), "batch_size": 8})
    assert applied_learning_rate(smaller) == pytest.approx(1.0e-5, rel=1e-12)
    # With a token budget, batches vary: the rate follows the mean reviews per step.
    assert applied_learning_rate(spec, reviews_per_step=30.0) == pytest.approx(2.0e-5 * math.sqrt(30 / 32))
