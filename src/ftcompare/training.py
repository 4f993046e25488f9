"""Fine-tune one (strategy, seed) run: the training loop, checkpoints and the run record.

The loop is written out rather than delegated to `transformers.Trainer` because what it
measures and how it resumes are the product: training time excludes validation and
checkpoint I/O, there is no per-step host synchronisation (losses are summed on the
device and read every `log_every_steps`), and a resumed run continues with the same
model, optimizer, scheduler, RNG and data order as if it had never stopped.

The best epoch is chosen on the validation split; the test split is not touched here.

Divergence is a failure, never a result: a non-finite training loss stops the run
(status `failed`, the reason naming the steps and the learning rate), as do non-finite
weights before a checkpoint or non-finite validation logits. Whatever selects among runs
(the report, a future tuning search) can rely on that: a diverged run or trial has status
`failed` and no metrics to be chosen by. A run that trains but whose best epoch predicts
one class for every validation review is kept `ok` and flagged (`degenerate_validation`
in its metrics): the report shows the flag beside its accuracy.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
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
from ftcompare.batching import TrainBatching, load_tokenized
from ftcompare.config import RunSpec
from ftcompare.inference import predict_logits, softmax_cross_entropy
from ftcompare.models import (
    Precision,
    StrategyUnavailable,
    build_model,
    count_parameters,
    method_step,
    resolve_precision,
    save_trained,
    split_trainable,
    text_length,
)
from ftcompare.progress import Reporter
from ftcompare.records import Status
from ftcompare.sources import portable_model_name
from ftcompare.steps import TrainStep, build_optimizer, build_scheduler, current_lr, peak_memory, select_device

log = logging.getLogger(__name__)


class Diverged(RuntimeError):
    """The loss, the weights or the validation logits stopped being finite numbers; the
    curves recorded until then travel with it into the failed run's record."""

    def __init__(self, message: str, *, loss_curve: list | None = None, val_curve: list | None = None) -> None:
        super().__init__(message)
        self.loss_curve, self.val_curve = list(loss_curve or []), list(val_curve or [])


class Preempted(BaseException):
    """SIGTERM arrived: a checkpoint was saved and the job must exit non-zero to be rerun.

    A BaseException so that the failure isolation (`except Exception`) does not record
    a preemption as a failed run.
    """


@dataclasses.dataclass(kw_only=True)
class TrainResult:
    status: Status
    reason: str | None = None
    # False where a rerun with the same settings would end the same way (divergence).
    retry: bool = True
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    loss_curve: list[dict[str, float]] = dataclasses.field(default_factory=list)
    val_curve: list[dict[str, float]] = dataclasses.field(default_factory=list)
    device: torch.device | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors, numbers, tuples and dicts: what a checkpoint
    may hold to load with weights_only=True (numpy's key array becomes a list)."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"] = {**numpy_state["state"], "key": numpy_state["state"]["key"].tolist()}
    state = {
        "python": random.getstate(),
        "numpy": numpy_state,
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        # The current device's only: a requeued job may land on a node with fewer GPUs.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    key = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state({**numpy_state, "state": {**numpy_state["state"], "key": key}})
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


def train_run(
    *,
    spec: RunSpec,
    tokenized_dir: Path,
    model_out_dir: Path | None,
    checkpoint_dir: Path,
    device: torch.device | None = None,
    base_model: str | None = None,
    reporter: Reporter | None = None,
) -> TrainResult:
    """Train one run and save the best-on-validation weights to `model_out_dir` (None:
    a tuning trial, whose validation score is all that is kept), with what makes that
    folder load alone (models.save_trained). `base_model`: the model as configured, which
    a saved adapter names as its base, where `spec` loads a local copy of it (the jobs'
    fetched copy of a hub model); by default `spec.model_name_or_path`.

    Returns a TrainResult whose status is `ok`, `skipped` (the strategy cannot run on
    this machine) or `failed` (an error such as out-of-memory, with its message): one
    run's failure must not stop the study. Raises Preempted on SIGTERM after saving a
    checkpoint, so that the job exits non-zero and its rerun resumes. `reporter`: where
    progress goes (ftcompare.progress); by default, lines in the log only.
    """
    device = device or select_device()
    reporter = reporter or Reporter(
        label=f"{spec.strategy}/seed{spec.seed}", kind="train", log_every=spec.log_every_steps
    )
    try:
        with sigterm_requests_stop() as stop:
            return _train(
                spec=spec,
                tokenized_dir=Path(tokenized_dir),
                model_out_dir=None if model_out_dir is None else Path(model_out_dir),
                checkpoint_dir=Path(checkpoint_dir),
                device=device,
                stop=stop,
                base_model=portable_model_name(base_model or spec.model_name_or_path),
                reporter=reporter,
            )
    except StrategyUnavailable as exc:
        log.warning("strategy %s skipped: %s", spec.strategy, exc)
        return TrainResult(status=Status.SKIPPED, reason=str(exc), device=device)
    except Diverged as exc:
        log.error("run %s/seed%d failed: %s", spec.strategy, spec.seed, exc)
        return TrainResult(
            status=Status.FAILED,
            reason=f"diverged: {exc}",
            retry=False,
            loss_curve=exc.loss_curve,
            val_curve=exc.val_curve,
            device=device,
        )
    except Exception as exc:  # failure isolation: record it, let the other runs finish
        log.error("run %s/seed%d failed:\n%s", spec.strategy, spec.seed, traceback.format_exc())
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return TrainResult(status=Status.FAILED, reason=f"{type(exc).__name__}: {exc}"[:2000], device=device)


def _train(
    *,
    spec: RunSpec,
    tokenized_dir: Path,
    model_out_dir: Path | None,
    checkpoint_dir: Path,
    device: torch.device,
    stop: threading.Event,
    base_model: str,
    reporter: Reporter,
) -> TrainResult:
    precision = resolve_precision(requested=spec.precision, method=spec.method, device=device)
    data = load_tokenized(tokenized_dir, splits=("train", "validation"))  # never the test split
    train, validation = data.splits["train"], data.splits["validation"]
    length = text_length(spec)
    if length < spec.max_length:  # virtual tokens take the rest of the positions
        log.info("%s reads the first %d tokens of each review (max_length %d)", spec.strategy, length, spec.max_length)
        train, validation = train.truncated(length), validation.truncated(length)
    seed_everything(spec.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    # Every epoch's batches up front: the schedule needs the step count, which a token
    # budget makes depend on the lengths; (seed, epoch) fixes them, so a resume agrees.
    batching = TrainBatching.from_spec(spec)
    plan = [batching.epoch(train.lengths, seed=spec.seed, epoch=epoch) for epoch in range(spec.epochs)]
    total_steps = sum(len(batches) for batches in plan)
    reviews_per_step = len(train) * spec.epochs / total_steps
    learning_rate = spec.effective_learning_rate(
        reviews_per_step=None if spec.max_tokens_per_batch is None else reviews_per_step
    )

    model = build_model(
        spec=spec, num_labels=data.num_labels, device=device, precision=precision, total_steps=total_steps
    )
    after_step = method_step(model)
    trainable_count, total_count = count_parameters(model)
    method_count, head_count = split_trainable(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    log.info(
        "%s/seed%d on %s (%s): %s trainable of %s parameters, lr %.3g (%.1f reviews per step, at most %d%s)",
        spec.strategy,
        spec.seed,
        device,
        precision.name,
        f"{trainable_count:,}",
        f"{total_count:,}",
        learning_rate,
        reviews_per_step,
        spec.batch_size,
        "" if spec.max_tokens_per_batch is None else f" and {spec.max_tokens_per_batch} padded tokens",
    )
    forward = torch.compile(model, dynamic=True) if spec.compile else model

    graphs = spec.cuda_graphs and device.type == "cuda"
    optimizer = build_optimizer(
        trainable,
        weight_decay=spec.weight_decay,
        learning_rate=learning_rate,
        device=device,
        capturable=graphs and after_step is None,  # a method step that a graph cannot hold trains eagerly
    )
    scheduler = build_scheduler(optimizer, total_steps=total_steps, warmup_ratio=spec.warmup_ratio)

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
        checkpoint_dir,
        spec=spec,
        precision=precision,
        trainable=trainable,
        optimizer=optimizer,
        scheduler=scheduler,
        state=state,
        method=after_step,
    )

    settings = (
        f"learning_rate {spec.learning_rate:g}, {learning_rate:.3g} as applied; max_grad_norm "
        f"{'null' if spec.max_grad_norm is None else f'{spec.max_grad_norm:g}'}): lower "
        f"strategies.{spec.strategy}.learning_rate"
    )

    def diverged(what: str) -> Diverged:
        return Diverged(f"{what} ({settings}", loss_curve=state["loss_curve"], val_curve=state["val_curve"])

    # The loss is summed on the device and read only at log points and checkpoints (each
    # read is a host sync): cross-entropy is never negative, so the sum is non-finite
    # exactly when some step's loss was, and one check per read covers every step.
    checked_through = state["global_step"]

    def check_loss(window_sum: float) -> None:
        nonlocal checked_through
        step = state["global_step"]
        if not math.isfinite(window_sum):
            kind = "NaN" if math.isnan(window_sum) else "infinite"
            where = (
                f"at step {step}" if step == checked_through + 1 else f"between steps {checked_through + 1} and {step}"
            )
            epochs_done = state["epoch"] + state["batch_in_epoch"] / len(plan[state["epoch"]])
            state["loss_curve"].append({"step": step, "epoch": epochs_done, "loss": None, "lr": current_lr(scheduler)})
            raise diverged(f"training loss became {kind} {where} of {total_steps}")
        checked_through = step

    def save_checkpoint() -> None:
        started = time.perf_counter()
        state["peak_memory"] = peak_memory(device, earlier=state["peak_memory"])
        weights = {n: p.detach().cpu() for n, p in trainable}
        # A finite loss does not prove finite weights: the step that read it may have
        # broken them. A checkpoint resumed from must never hold a diverged run.
        broken = [n for n, tensor in weights.items() if not bool(torch.isfinite(tensor).all())]
        if broken:
            raise diverged(
                f"weights became non-finite by step {state['global_step']} ({len(broken)} tensors, e.g. {broken[0]})"
            )
        payload = {
            "spec": spec.to_dict(),
            "precision": precision.name,
            "state": state,
            "trainable": weights,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            # What the method keeps between steps beyond its weights (AdaLoRA's importance scores).
            "method_state": None if after_step is None else after_step.state_dict(),
        }
        ckpt.save_checkpoint(payload, directory=checkpoint_dir, step=state["global_step"])
        state["checkpoint_time_s"] += time.perf_counter() - started

    model.train()
    step_once = TrainStep(
        model=forward,
        optimizer=optimizer,
        scheduler=scheduler,
        trainable=[p for _, p in trainable],
        max_grad_norm=spec.max_grad_norm,
        device=device,
        precision=precision,
        cuda_graphs=graphs,
        after_step=after_step,
        graph_refusal=None if after_step is None else after_step.graph_refusal,
    )
    if step_once.use_graphs:
        # Every batch shape the remaining epochs use, recorded before the first step; the
        # time it takes counts as training time.
        started = time.perf_counter()
        shapes: dict[tuple[int, int], Any] = {}
        for indices in (i for batches in plan[state["epoch"] :] for i in batches):
            shapes.setdefault((batching.rows(train.lengths, indices), batching.width(train.lengths, indices)), indices)
        step_once.prepare([batching.collate(train, i, pad_token_id=data.pad_token_id) for i in shapes.values()])
        state["train_time_s"] += _elapsed(started, device)
    best_so_far = None if state["best"] is None else state["best"]["val_accuracy"]
    reporter.start_training(
        total_steps=total_steps,
        epochs=spec.epochs,
        step=state["global_step"],
        epoch=state["epoch"],
        tokens=state["train_tokens"],
        best=best_so_far,
    )
    loss_sum = torch.zeros((), device=device)
    last_checkpoint = time.monotonic()
    while state["epoch"] < spec.epochs:
        epoch = state["epoch"]
        batches = plan[epoch]
        segment_start = time.perf_counter()
        for indices in batches[state["batch_in_epoch"] :]:
            loss_sum += step_once(batching.collate(train, indices, pad_token_id=data.pad_token_id))
            # summed on the device: no host sync per step
            state["loss_count"] += 1
            state["batch_in_epoch"] += 1
            state["global_step"] += 1
            state["train_tokens"] += int(train.lengths[indices].sum())
            step = state["global_step"]
            if step % spec.log_every_steps == 0 or state["batch_in_epoch"] == len(batches):
                window_sum = loss_sum.item()
                check_loss(window_sum)
                mean = (state["loss_sum"] + window_sum) / state["loss_count"]
                epochs_done = epoch + state["batch_in_epoch"] / len(batches)
                state["loss_curve"].append(
                    {"step": step, "epoch": epochs_done, "loss": mean, "lr": current_lr(scheduler)}
                )
                reporter.logged(
                    step=step,
                    epoch=epochs_done,
                    loss=mean,
                    lr=current_lr(scheduler),
                    tokens=state["train_tokens"],
                    memory=peak_memory(device, earlier=state["peak_memory"]),
                )
                loss_sum.zero_()
                state["loss_sum"], state["loss_count"] = 0.0, 0
            reporter.tick(
                step=step,
                epoch=epoch + state["batch_in_epoch"] / len(batches),
                tokens=state["train_tokens"],
                window_loss=lambda total=loss_sum: (state["loss_sum"] + total.item()) / max(state["loss_count"], 1),
            )

            due_by_steps = spec.checkpoint_every_steps and step % spec.checkpoint_every_steps == 0
            due_by_time = (
                spec.checkpoint_every_minutes is not None
                and time.monotonic() - last_checkpoint > 60 * spec.checkpoint_every_minutes
            )
            # The epoch's last batch is checkpointed after validation, below.
            ends_epoch = state["batch_in_epoch"] == len(batches)
            if stop.is_set() or ((due_by_steps or due_by_time) and not ends_epoch):
                state["train_time_s"] += _elapsed(segment_start, device)
                window_sum = loss_sum.item()
                check_loss(window_sum)
                state["loss_sum"] += window_sum
                loss_sum.zero_()
                save_checkpoint()
                last_checkpoint = time.monotonic()
                if stop.is_set():
                    log.warning("SIGTERM: checkpoint saved at step %d; exiting so a rerun resumes", step)
                    raise Preempted(f"preempted at step {step}")
                segment_start = time.perf_counter()
        state["train_time_s"] += _elapsed(segment_start, device)

        logits = predict_logits(
            model,
            validation,
            batch_size=spec.eval_batch_size,
            pad_token_id=data.pad_token_id,
            pad_to_multiple_of=spec.pad_to_multiple_of,
            device=device,
            precision=precision,
            max_tokens=spec.max_tokens_per_batch,
            on_batch=reporter.batches,
        )
        if not np.isfinite(logits).all():
            raise diverged(f"validation logits are not finite after epoch {epoch + 1} (step {state['global_step']})")
        predicted = logits.argmax(axis=1)
        accuracy = float((predicted == validation.labels).mean())
        val_loss = softmax_cross_entropy(logits, validation.labels)
        classes = np.unique(predicted)
        state["val_curve"].append(
            {
                "step": state["global_step"],
                "epoch": epoch + 1,
                "accuracy": accuracy,
                "loss": val_loss,
                "predicted_classes": len(classes),
            }
        )
        # One class for every review: what a model whose updates blew up (the loss in the
        # hundreds) or collapsed predicts; its accuracy is that class's share, not skill.
        degenerate = (
            f"all {len(predicted)} validation predictions are class {classes[0]}" if len(classes) == 1 else None
        )
        log.log(
            logging.WARNING if degenerate else logging.INFO,
            "epoch %d: validation accuracy %.4f loss %.4f%s",
            epoch + 1,
            accuracy,
            val_loss,
            f" ({degenerate})" if degenerate else "",
        )
        reporter.validated(epoch=epoch + 1, step=state["global_step"], accuracy=accuracy, loss=val_loss)
        if state["best"] is None or accuracy > state["best"]["val_accuracy"]:
            weights = {n: p.detach().to("cpu", copy=True) for n, p in trainable}
            state["best"] = {"epoch": epoch + 1, "val_accuracy": accuracy, "weights": weights, "degenerate": degenerate}
        state["epoch"] += 1
        state["batch_in_epoch"] = 0
        if state["epoch"] < spec.epochs:
            save_checkpoint()  # every epoch boundary, whatever the time-based setting
            last_checkpoint = time.monotonic()

    step_once.release()
    best = state["best"]
    with torch.no_grad():
        for name, param in trainable:
            param.copy_(best["weights"][name])
    adapter_size_mb = None
    if model_out_dir is not None:
        adapter_size_mb = save_trained(
            model,
            out_dir=model_out_dir,
            label_names=data.label_names,
            tokenizer_source=spec.model_name_or_path,
            max_length=spec.max_length,
            base_model=base_model,
        )
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
        # Set when the chosen epoch predicted one class for every validation review.
        "degenerate_validation": best.get("degenerate"),
        "effective_learning_rate": learning_rate,
        "mean_reviews_per_step": reviews_per_step,
        "precision": precision.name,
        "trainable_params": trainable_count,
        # Of those, the method's own and the classification head's (which every adapter trains too).
        "method_params": method_count,
        "head_params": head_count,
        "total_params": total_count,
        "trainable_pct": 100.0 * trainable_count / total_count,
        "adapter_size_mb": adapter_size_mb,
        "resumed_from_steps": state["resumed_from_steps"],
        "cuda_graphs": step_once.describe(),
        # Text tokens per review: max_length, or fewer where virtual tokens take positions.
        "text_max_length": length,
        **peak_memory(device, earlier=state["peak_memory"]),
    }
    if resumed:
        metrics["resumed"] = True
    return TrainResult(
        status=Status.OK, metrics=metrics, loss_curve=state["loss_curve"], val_curve=state["val_curve"], device=device
    )


def _elapsed(start: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # once per segment, so the clock sees finished work
    return time.perf_counter() - start


CHECKPOINT_KEYS = ("spec", "precision", "state", "trainable", "optimizer", "scheduler", "rng")


def _resume(
    directory: Path,
    *,
    spec: RunSpec,
    precision: Precision,
    trainable: list[tuple[str, torch.nn.Parameter]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    method: Any | None = None,
) -> bool:
    """Restore the newest good checkpoint into the objects given; False if there is none.

    A checkpoint that loads but is not one of this run's (not a mapping of the expected
    parts, parameters of other names or shapes) is moved aside and the next older one
    tried; one made with other settings or precision means the run starts from scratch."""
    shapes = {name: tuple(param.shape) for name, param in trainable}

    def problem(saved: Any) -> str | None:
        if not isinstance(saved, dict) or not isinstance(saved.get("spec"), dict):
            return "not a training checkpoint: no settings ('spec') in it"
        if saved["spec"] != spec.to_dict() or saved.get("precision") != precision.name:
            return None  # a checkpoint of other settings: handled below
        if missing := [key for key in CHECKPOINT_KEYS if key not in saved]:
            return f"not a training checkpoint: it lacks {missing}"
        weights = saved["trainable"]
        if not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
            return "not a training checkpoint: 'trainable' is not a mapping of tensors"
        if {name: tuple(tensor.shape) for name, tensor in weights.items()} != shapes:
            return "its parameters do not fit this model (other names or shapes)"
        return None

    found = ckpt.load_latest_checkpoint(directory, check=problem)
    if found is None:
        return False
    saved, path = found
    if saved["spec"] != spec.to_dict():
        current = spec.to_dict()
        changed = sorted(k for k in {*saved["spec"], *current} if saved["spec"].get(k) != current.get(k))
        log.warning("checkpoint %s was made with other settings (%s): starting from scratch", path, changed)
        ckpt.remove_checkpoints(directory)
        return False
    if saved.get("precision") != precision.name:
        log.warning(
            "checkpoint %s was made at precision %s, this run trains at %s: starting from scratch",
            path,
            saved.get("precision"),
            precision.name,
        )
        ckpt.remove_checkpoints(directory)
        return False
    try:
        with torch.no_grad():
            for name, param in trainable:
                param.copy_(saved["trainable"][name])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state.update(saved["state"])
        state["resumed_from_steps"] = [*state["resumed_from_steps"], state["global_step"]]
        set_rng_state(saved["rng"])
        if method is not None and saved.get("method_state") is not None:
            method.load_state_dict(saved["method_state"])
    except Exception as exc:  # malformed parts; the objects are half restored, so this run cannot go on
        ckpt.quarantine(path, f"cannot be restored: {type(exc).__name__}: {exc}"[:500])
        raise RuntimeError(
            f"checkpoint {path} could not be restored ({exc}); it was moved aside, and a rerun "
            "resumes from the previous one or starts from scratch"
        ) from exc
    log.warning(
        "resumed from step %d (epoch %d, batch %d) using %s",
        state["global_step"],
        state["epoch"],
        state["batch_in_epoch"],
        path.name,
    )
    return True
