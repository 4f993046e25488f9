"""Fine-tune one (strategy, seed) run: the training loop, checkpoints and the run record.

The loop is written out rather than delegated to `transformers.Trainer` because what it
measures and how it resumes are the product: training time excludes validation and
checkpoint I/O, there is no per-step host synchronisation (losses are summed on the
device and read every `log_every_steps`), and a resumed run continues with the same
model, optimizer, scheduler, RNG and data order as if it had never stopped.

The best epoch is chosen on the validation split; the test split is not touched here.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import resource
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftcompare import checkpoint as ckpt
from ftcompare.batching import TokenizedSplit, collate, epoch_batches, eval_batches, load_tokenized
from ftcompare.config import RunSpec
from ftcompare.models import (
    Precision,
    StrategyUnavailable,
    build_model,
    count_parameters,
    resolve_precision,
    save_trained,
)

log = logging.getLogger(__name__)

STATUSES = ("ok", "failed", "skipped")


class Preempted(BaseException):
    """SIGTERM arrived: a checkpoint was saved and the job must exit non-zero to be rerun.

    A BaseException so that the failure isolation (`except Exception`) does not record
    a preemption as a failed run.
    """


@dataclasses.dataclass(kw_only=True)
class TrainResult:
    status: str
    reason: str | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    loss_curve: list[dict[str, float]] = dataclasses.field(default_factory=list)
    val_curve: list[dict[str, float]] = dataclasses.field(default_factory=list)
    device: torch.device | None = None


def select_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        # The current device's only: a requeued job may land on a node with fewer GPUs.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


@contextmanager
def sigterm_requests_stop() -> Iterator[threading.Event]:
    """While active, SIGTERM sets the returned event instead of killing the process."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals can only be handled in the main thread
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def autocast(device: torch.device, precision: Precision):
    if precision.autocast_dtype is None:
        return torch.autocast(device_type=device.type, enabled=False)
    return torch.autocast(device_type=device.type, dtype=precision.autocast_dtype)


@torch.inference_mode()
def predict_logits(
    model: torch.nn.Module,
    split: TokenizedSplit,
    *,
    batch_size: int,
    pad_token_id: int,
    pad_to_multiple_of: int,
    device: torch.device,
    precision: Precision,
    max_tokens: int | None = None,
) -> np.ndarray:
    """Logits for every row of `split`, in the split's order (batches sorted by length).

    `max_tokens` caps each batch's padded tokens as in training. Validation passes the
    run's budget: it runs inside the training process, and an inference batch of
    256 x 512 tokens would otherwise set the peak memory of a run whose training batches
    are far smaller (QLoRA's). The evaluate job, a process of its own, does not."""
    was_training = model.training
    model.eval()
    pieces: list[tuple[np.ndarray, torch.Tensor]] = []
    batches = eval_batches(split.lengths, batch_size=batch_size, max_tokens=max_tokens,
                           pad_to_multiple_of=pad_to_multiple_of)  # fmt: skip
    for indices in batches:
        batch = collate(split, indices, pad_token_id=pad_token_id, pad_to_multiple_of=pad_to_multiple_of)
        with autocast(device, precision):
            logits = model(
                input_ids=batch["input_ids"].to(device, non_blocking=True),
                attention_mask=batch["attention_mask"].to(device, non_blocking=True),
            ).logits
        pieces.append((indices, logits.float()))  # stays on the device: one copy at the end
    model.train(was_training)
    num_labels = pieces[0][1].shape[-1]
    out = np.empty((len(split), num_labels), dtype=np.float32)
    for indices, logits in pieces:
        out[indices] = logits.cpu().numpy()
    return out


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def _optimizer(
    trainable: list[tuple[str, torch.nn.Parameter]], spec: RunSpec, device: torch.device, *, learning_rate: float
):
    # No weight decay on biases and LayerNorm weights (the 1-d tensors), as in BERT/RoBERTa.
    decay = [p for _, p in trainable if p.ndim >= 2]
    no_decay = [p for _, p in trainable if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=learning_rate,
        fused=device.type == "cuda",  # one kernel for the whole update instead of several per tensor
    )


def _scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(warmup_ratio * total_steps)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:  # linear warm-up, then linear decay to zero
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _peak_memory(device: torch.device, *, earlier: dict[str, float | None] | None = None) -> dict[str, float | None]:
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


def finetune(
    *,
    spec: RunSpec,
    tokenized_dir: Path,
    model_out_dir: Path,
    checkpoint_dir: Path,
    device: torch.device | None = None,
) -> TrainResult:
    """Train one run and save the best-on-validation weights to `model_out_dir`.

    Returns a TrainResult whose status is `ok`, `skipped` (the strategy cannot run on
    this machine) or `failed` (an error such as out-of-memory, with its message): one
    run's failure must not stop the study. Raises Preempted on SIGTERM after saving a
    checkpoint, so that the job exits non-zero and its rerun resumes.
    """
    device = device or select_device()
    try:
        with sigterm_requests_stop() as stop:
            return _train(
                spec=spec,
                tokenized_dir=Path(tokenized_dir),
                model_out_dir=Path(model_out_dir),
                checkpoint_dir=Path(checkpoint_dir),
                device=device,
                stop=stop,
            )
    except StrategyUnavailable as exc:
        log.warning("strategy %s skipped: %s", spec.strategy, exc)
        return TrainResult(status="skipped", reason=str(exc), device=device)
    except Exception as exc:  # failure isolation: record it, let the other runs finish
        log.error("run %s/seed%d failed:\n%s", spec.strategy, spec.seed, traceback.format_exc())
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return TrainResult(status="failed", reason=f"{type(exc).__name__}: {exc}"[:2000], device=device)


def _train(
    *,
    spec: RunSpec,
    tokenized_dir: Path,
    model_out_dir: Path,
    checkpoint_dir: Path,
    device: torch.device,
    stop: threading.Event,
) -> TrainResult:
    precision = resolve_precision(requested=spec.precision, method=spec.method, device=device)
    data = load_tokenized(tokenized_dir, splits=("train", "validation"))  # never the test split
    train, validation = data.splits["train"], data.splits["validation"]
    seed_everything(spec.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # Every epoch's batches up front: the schedule needs the step count, which a token
    # budget makes depend on the lengths; (seed, epoch) fixes them, so a resume agrees.
    plan = [
        epoch_batches(
            train.lengths, batch_size=spec.batch_size, seed=spec.seed, epoch=epoch,
            group_by_length=spec.group_by_length, max_tokens=spec.max_tokens_per_batch,
            pad_to_multiple_of=spec.pad_to_multiple_of,
        )  # fmt: skip
        for epoch in range(spec.epochs)
    ]
    total_steps = sum(len(batches) for batches in plan)
    reviews_per_step = len(train) * spec.epochs / total_steps
    learning_rate = spec.effective_learning_rate(
        reviews_per_step=None if spec.max_tokens_per_batch is None else reviews_per_step
    )

    model = build_model(spec=spec, num_labels=data.num_labels, device=device, precision=precision)
    trainable_count, total_count = count_parameters(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    trainable_tensors = [p for _, p in trainable]
    log.info(
        "%s/seed%d on %s (%s): %s trainable of %s parameters, lr %.3g (%.1f reviews per step, at most %d%s)",
        spec.strategy, spec.seed, device, precision.name, f"{trainable_count:,}", f"{total_count:,}",
        learning_rate, reviews_per_step, spec.batch_size,
        "" if spec.max_tokens_per_batch is None else f" and {spec.max_tokens_per_batch} padded tokens",
    )  # fmt: skip
    forward = torch.compile(model, dynamic=True) if spec.compile else model

    optimizer = _optimizer(trainable, spec, device, learning_rate=learning_rate)
    scheduler = _scheduler(optimizer, total_steps=total_steps, warmup_ratio=spec.warmup_ratio)

    state: dict[str, Any] = {
        "epoch": 0,
        "batch_in_epoch": 0,
        "global_step": 0,
        "train_time_s": 0.0,
        "checkpoint_time_s": 0.0,
        "train_tokens": 0,
        "loss_sum": 0.0,
        "loss_count": 0,
        "loss_curve": [],
        "val_curve": [],
        "best": None,  # {"epoch", "val_accuracy", "weights"}
        "resumed_from_steps": [],
        "peak_memory": None,  # the earlier processes' peaks, when resumed
    }
    resumed = _resume(
        checkpoint_dir, spec=spec, precision=precision, trainable=trainable, optimizer=optimizer,
        scheduler=scheduler, state=state,
    )  # fmt: skip

    def save_checkpoint() -> None:
        started = time.perf_counter()
        state["peak_memory"] = _peak_memory(device, earlier=state["peak_memory"])
        payload = {
            "spec": spec.to_dict(),
            "precision": precision.name,
            "state": state,
            "trainable": {n: p.detach().cpu() for n, p in trainable},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
        }
        ckpt.save_checkpoint(payload, directory=checkpoint_dir, step=state["global_step"])
        state["checkpoint_time_s"] += time.perf_counter() - started

    model.train()
    loss_sum = torch.zeros((), device=device)
    last_checkpoint = time.monotonic()
    while state["epoch"] < spec.epochs:
        epoch = state["epoch"]
        batches = plan[epoch]
        segment_start = time.perf_counter()
        for indices in batches[state["batch_in_epoch"] :]:
            batch = collate(
                train, indices, pad_token_id=data.pad_token_id, pad_to_multiple_of=spec.pad_to_multiple_of
            )
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast(device, precision):
                loss = forward(**batch).loss
            loss.backward()
            if spec.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable_tensors, spec.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            loss_sum += loss.detach()  # summed on the device: no host sync per step
            state["loss_count"] += 1
            state["batch_in_epoch"] += 1
            state["global_step"] += 1
            state["train_tokens"] += int(train.lengths[indices].sum())
            step = state["global_step"]
            if step % spec.log_every_steps == 0 or state["batch_in_epoch"] == len(batches):
                mean = (state["loss_sum"] + loss_sum.item()) / state["loss_count"]
                epochs_done = epoch + state["batch_in_epoch"] / len(batches)
                state["loss_curve"].append(
                    {"step": step, "epoch": epochs_done, "loss": mean, "lr": scheduler.get_last_lr()[0]}
                )
                log.info("step %d/%d epoch %.2f loss %.4f", step, total_steps, epochs_done, mean)
                loss_sum.zero_()
                state["loss_sum"], state["loss_count"] = 0.0, 0

            due_by_steps = spec.checkpoint_every_steps and step % spec.checkpoint_every_steps == 0
            due_by_time = (
                spec.checkpoint_every_minutes is not None
                and time.monotonic() - last_checkpoint > 60 * spec.checkpoint_every_minutes
            )
            # The epoch's last batch is checkpointed after validation, below.
            ends_epoch = state["batch_in_epoch"] == len(batches)
            if stop.is_set() or ((due_by_steps or due_by_time) and not ends_epoch):
                state["train_time_s"] += _elapsed(segment_start, device)
                state["loss_sum"] += loss_sum.item()
                loss_sum.zero_()
                save_checkpoint()
                last_checkpoint = time.monotonic()
                if stop.is_set():
                    log.warning("SIGTERM: checkpoint saved at step %d; exiting so a rerun resumes", step)
                    raise Preempted(f"preempted at step {step}")
                segment_start = time.perf_counter()
        state["train_time_s"] += _elapsed(segment_start, device)

        logits = predict_logits(
            model, validation, batch_size=spec.eval_batch_size, pad_token_id=data.pad_token_id,
            pad_to_multiple_of=spec.pad_to_multiple_of, device=device, precision=precision,
            max_tokens=spec.max_tokens_per_batch,
        )  # fmt: skip
        accuracy = float((logits.argmax(axis=1) == validation.labels).mean())
        val_loss = softmax_cross_entropy(logits, validation.labels)
        state["val_curve"].append(
            {"step": state["global_step"], "epoch": epoch + 1, "accuracy": accuracy, "loss": val_loss}
        )
        log.info("epoch %d: validation accuracy %.4f loss %.4f", epoch + 1, accuracy, val_loss)
        if state["best"] is None or accuracy > state["best"]["val_accuracy"]:
            weights = {n: p.detach().to("cpu", copy=True) for n, p in trainable}
            state["best"] = {"epoch": epoch + 1, "val_accuracy": accuracy, "weights": weights}
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        if state["epoch"] < spec.epochs:
            save_checkpoint()  # every epoch boundary, whatever the time-based setting
            last_checkpoint = time.monotonic()

    best = state["best"]
    with torch.no_grad():
        for name, param in trainable:
            param.copy_(best["weights"][name])
    adapter_size_mb = save_trained(model, out_dir=model_out_dir)
    ckpt.remove_checkpoints(checkpoint_dir)

    train_time = state["train_time_s"]
    metrics = {
        "train_time_s": train_time,
        "checkpoint_time_s": state["checkpoint_time_s"],
        "tokens_per_s": state["train_tokens"] / train_time if train_time > 0 else None,
        "train_tokens": state["train_tokens"],
        "optimizer_steps": state["global_step"],
        "best_epoch": best["epoch"],
        "best_val_accuracy": best["val_accuracy"],
        "effective_learning_rate": learning_rate,
        "mean_reviews_per_step": reviews_per_step,
        "precision": precision.name,
        "trainable_params": trainable_count,
        "total_params": total_count,
        "trainable_pct": 100.0 * trainable_count / total_count,
        "adapter_size_mb": adapter_size_mb,
        "resumed_from_steps": state["resumed_from_steps"],
        **_peak_memory(device, earlier=state["peak_memory"]),
    }
    if resumed:
        metrics["resumed"] = True
    return TrainResult(
        status="ok", metrics=metrics, loss_curve=state["loss_curve"], val_curve=state["val_curve"], device=device
    )


def _elapsed(start: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # once per segment, so the clock sees finished work
    return time.perf_counter() - start


def _resume(
    directory: Path,
    *,
    spec: RunSpec,
    precision: Precision,
    trainable: list[tuple[str, torch.nn.Parameter]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
) -> bool:
    """Restore the newest good checkpoint into the objects given; False if there is none."""
    found = ckpt.load_latest_checkpoint(directory)
    if found is None:
        return False
    saved, path = found
    if saved["spec"] != spec.to_dict():
        current = spec.to_dict()
        changed = sorted(k for k in {*saved["spec"], *current} if saved["spec"].get(k) != current.get(k))
        log.warning("checkpoint %s was made with other settings (%s): starting from scratch", path, changed)
        ckpt.remove_checkpoints(directory)
        return False
    # Checked before anything is restored, so that a mismatch leaves a clean start.
    shapes = {name: tuple(param.shape) for name, param in trainable}
    saved_shapes = {name: tuple(tensor.shape) for name, tensor in saved.get("trainable", {}).items()}
    if saved.get("precision") != precision.name or saved_shapes != shapes:
        log.warning(
            "checkpoint %s does not fit this run (precision %s vs %s, or other parameters): starting from scratch",
            path, saved.get("precision"), precision.name,
        )  # fmt: skip
        ckpt.remove_checkpoints(directory)
        return False
    with torch.no_grad():
        for name, param in trainable:
            param.copy_(saved["trainable"][name])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    state.update(saved["state"])
    state["resumed_from_steps"] = [*state["resumed_from_steps"], state["global_step"]]
    set_rng_state(saved["rng"])
    log.warning("resumed from step %d (epoch %d, batch %d) using %s",
                state["global_step"], state["epoch"], state["batch_in_epoch"], path.name)  # fmt: skip
    return True
