"""Fine-tune one (strategy, seed) run: the training loop, checkpoints and the run record.

The loop is written out rather than delegated to `transformers.Trainer` because what it
measures and how it resumes are the product: training time excludes validation and
checkpoint I/O, there is no per-step host synchronisation (losses are summed on the
device and read every `log_every_steps`, more often on a short run: `log_interval`), and a
resumed run continues with the same model, optimizer, scheduler, RNG and data order as if it
had never stopped.

The best epoch is chosen on the validation split, on the task's primary metric
(`spec.metric`; every metric is recorded per epoch); the test split is not touched here.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ftcompare.contract import Status, all_scores, portable_model_name
from ftcompare.data import TokenizedSplit, TrainBatching, load_tokenized
from ftcompare.methods import RunSpec
from ftcompare.model import (
    Precision,
    StrategyUnavailable,
    count_parameters,
    fit_text_budget,
    peak_memory,
    predict_logits,
    save_trained,
    select_device,
    softmax_cross_entropy,
    split_trainable,
    text_length,
)
from ftcompare.train import checkpoint as ckpt
from ftcompare.train.progress import Reporter
from ftcompare.train.steps import TrainSetup, current_lr, setup_training

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
    progress goes (ftcompare.train.progress); by default, lines in the log only.
    """
    device = device or select_device()
    reporter = reporter or Reporter(label=spec.label(), kind="train", log_every=spec.log_every_steps)
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
        log.error("run %s failed: %s", spec.label(), exc)
        return TrainResult(
            status=Status.FAILED,
            reason=f"diverged: {exc}",
            retry=False,
            loss_curve=exc.loss_curve,
            val_curve=exc.val_curve,
            device=device,
        )
    except Exception as exc:  # failure isolation: record it, let the other runs finish
        log.error("run %s failed:\n%s", spec.label(), traceback.format_exc())
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return TrainResult(status=Status.FAILED, reason=f"{type(exc).__name__}: {exc}"[:2000], device=device)


@dataclasses.dataclass(kw_only=True)
class BestEpoch:
    """The epoch with the highest validation score (spec.metric) so far, and its trainable weights (on the CPU)."""

    epoch: int
    val_accuracy: float
    val_score: float  # on spec.metric; the first epoch of the highest wins
    weights: dict[str, torch.Tensor]
    degenerate: str | None = None  # why its predictions say nothing (one class for every review), if they do


@dataclasses.dataclass(kw_only=True)
class TrainState:
    """Where a run stands: everything the loop changes, what a checkpoint saves and a resume restores."""

    epoch: int = 0  # epochs done
    batch_in_epoch: int = 0  # batches of the current epoch done
    global_step: int = 0
    train_time_s: float = 0.0
    checkpoint_time_s: float = 0.0
    train_tokens: int = 0
    # The loss of the steps since the last log point that a checkpoint read off the device.
    loss_sum: float = 0.0
    loss_count: int = 0  # steps since the last log point
    loss_curve: list[dict[str, float | None]] = dataclasses.field(default_factory=list)
    val_curve: list[dict[str, float]] = dataclasses.field(default_factory=list)
    best: BestEpoch | None = None
    resumed_from_steps: list[int] = dataclasses.field(default_factory=list)
    peak_memory: dict[str, float | None] | None = None  # the earlier processes' peaks, when resumed

    def advance(self, *, tokens: int) -> None:
        """One optimizer step done on a batch of `tokens` real tokens."""
        self.loss_count += 1
        self.batch_in_epoch += 1
        self.global_step += 1
        self.train_tokens += tokens

    def to_checkpoint(self) -> dict[str, Any]:
        """Plain data, loadable with weights_only=True."""
        saved = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        if self.best is not None:
            saved["best"] = {field.name: getattr(self.best, field.name) for field in dataclasses.fields(self.best)}
        return saved

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> TrainState:
        best = saved.get("best")
        return cls(**{**saved, "best": None if best is None else BestEpoch(**best)})


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunData:
    """The splits a run reads (never the test split), cut to the text tokens it reads."""

    train: TokenizedSplit
    validation: TokenizedSplit
    num_labels: int
    pad_token_id: int
    label_names: list[str] | None
    text_length: int  # max_length, or fewer where virtual tokens take positions

    @classmethod
    def load(cls, spec: RunSpec, tokenized_dir: Path) -> RunData:
        data = load_tokenized(tokenized_dir, splits=("train", "validation"))
        train, validation = data.splits["train"], data.splits["validation"]
        length = text_length(spec)
        if length < spec.max_length:  # virtual tokens take the rest of the positions
            log.info(
                "%s reads the first %d tokens of each review (max_length %d)", spec.strategy, length, spec.max_length
            )
        # Cut as the evaluate job and `ftcompare predict` cut, in the one place that does it.
        train, validation = fit_text_budget(train, spec), fit_text_budget(validation, spec)
        return cls(
            train=train,
            validation=validation,
            num_labels=data.num_labels,
            pad_token_id=data.pad_token_id,
            label_names=data.label_names,
            text_length=length,
        )


# A loss curve has at least this many points (every step where a run has fewer): a short run
# logged every log_every_steps would draw a trend from a handful of points.
CURVE_POINTS = 50


def log_interval(total_steps: int, log_every_steps: int, points: int | None = None) -> int:
    """Optimizer steps between loss points: `log_every_steps`, or fewer so that a run of
    `total_steps` has at least `points` (CURVE_POINTS) of them; every step below that."""
    points = CURVE_POINTS if points is None else points
    if points <= 0:
        return log_every_steps
    return max(1, min(log_every_steps, total_steps // points))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainPlan:
    """Every epoch's batches, up front: the schedule needs the step count, which a token
    budget makes depend on the lengths; (seed, epoch) fixes them, so a resume agrees."""

    batching: TrainBatching
    epochs: list[list[np.ndarray]]
    total_steps: int
    reviews_per_step: float  # the mean batch
    log_every: int  # optimizer steps between loss points: spec.log_every_steps, or fewer on a short run

    @classmethod
    def of(cls, spec: RunSpec, train: TokenizedSplit) -> TrainPlan:
        batching = TrainBatching.from_spec(spec)
        epochs = [batching.epoch(train.lengths, seed=spec.seed, epoch=epoch) for epoch in range(spec.epochs)]
        total_steps = sum(len(batches) for batches in epochs)
        return cls(
            batching=batching,
            epochs=epochs,
            total_steps=total_steps,
            reviews_per_step=len(train) * spec.epochs / total_steps,
            log_every=log_interval(total_steps, spec.log_every_steps),
        )

    def epochs_done(self, state: TrainState) -> float:
        return state.epoch + state.batch_in_epoch / len(self.epochs[state.epoch])


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
    data = RunData.load(spec, tokenized_dir)
    seed_everything(spec.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    plan = TrainPlan.of(spec, data.train)
    setup = setup_training(
        spec,
        num_labels=data.num_labels,
        device=device,
        total_steps=plan.total_steps,
        reviews_per_step=plan.reviews_per_step,
    )
    counts = parameter_counts(setup.model)
    _log_start(spec, setup=setup, plan=plan, counts=counts, device=device)
    resumed = _resume(checkpoint_dir, spec=spec, setup=setup)

    loop = _Loop(
        spec=spec,
        data=data,
        plan=plan,
        setup=setup,
        state=resumed or TrainState(),
        device=device,
        checkpoint_dir=checkpoint_dir,
        stop=stop,
        reporter=reporter,
    )
    state = loop.run()
    setup.step.release()

    with torch.no_grad():
        for name, param in setup.trainable:
            param.copy_(state.best.weights[name])
    adapter_size_mb = None
    if model_out_dir is not None:
        adapter_size_mb = save_trained(
            setup.model,
            out_dir=model_out_dir,
            label_names=data.label_names,
            tokenizer_source=spec.model_name_or_path,
            max_length=spec.max_length,
            base_model=base_model,
        )
    ckpt.remove_checkpoints(checkpoint_dir)
    # The run is over: where one ends (its record, what it reports), its numbers are these.
    metrics = run_metrics(
        state,
        spec=spec,
        setup=setup,
        plan=plan,
        counts=counts,
        adapter_size_mb=adapter_size_mb,
        data=data,
        device=device,
    )
    if resumed is not None:
        metrics["resumed"] = True
    return TrainResult(
        status=Status.OK, metrics=metrics, loss_curve=state.loss_curve, val_curve=state.val_curve, device=device
    )


def parameter_counts(model: torch.nn.Module) -> dict[str, Any]:
    """What a run trains, as its record has it."""
    trainable_count, total_count = count_parameters(model)
    method_count, head_count = split_trainable(model)
    return {
        "trainable_params": trainable_count,
        # Of those, the method's own and the classification head's (which every adapter trains too).
        "method_params": method_count,
        "head_params": head_count,
        "total_params": total_count,
        "trainable_pct": 100.0 * trainable_count / total_count,
    }


def _log_start(
    spec: RunSpec, *, setup: TrainSetup, plan: TrainPlan, counts: dict[str, Any], device: torch.device
) -> None:
    log.info(
        "%s on %s (%s): %s trainable of %s parameters, lr %.3g (%.1f reviews per step, at most %d%s)",
        spec.label(),
        device,
        setup.precision.name,
        f"{counts['trainable_params']:,}",
        f"{counts['total_params']:,}",
        setup.learning_rate,
        plan.reviews_per_step,
        spec.batch_size,
        "" if spec.max_tokens_per_batch is None else f" and {spec.max_tokens_per_batch} padded tokens",
    )


@dataclasses.dataclass(kw_only=True)
class _Loop:
    """The epochs of one run: steps, the loss read at log points, checkpoints, validation.
    What it changes is in `state`; the rest is fixed for the run. Each event has one place:
    an optimizer step in `_train_epoch` (`state.advance`), a loss point in `_log_loss`, an
    epoch's validation in `_end_epoch`; the run's end is `_train`'s `run_metrics`."""

    spec: RunSpec
    data: RunData
    plan: TrainPlan
    setup: TrainSetup
    state: TrainState
    device: torch.device
    checkpoint_dir: Path
    stop: threading.Event  # set by SIGTERM: checkpoint and exit
    reporter: Reporter  # progress lines, the progress file and TensorBoard events

    def __post_init__(self) -> None:
        # The loss is summed on the device and read only at log points and checkpoints
        # (each read is a host sync): cross-entropy is never negative, so the sum is
        # non-finite exactly when some step's loss was, and one check per read covers every step.
        self.loss_window = torch.zeros((), device=self.device)
        self.checked_through = self.state.global_step
        self.last_checkpoint = time.monotonic()

    def run(self) -> TrainState:
        self._record_graphs()
        self.last_checkpoint = time.monotonic()
        state = self.state
        self.reporter.start_training(
            total_steps=self.plan.total_steps,
            epochs=self.spec.epochs,
            step=state.global_step,
            epoch=state.epoch,
            tokens=state.train_tokens,
            best=None if state.best is None else state.best.val_accuracy,
            best_score=None if state.best is None else state.best.val_score,
            log_every=self.plan.log_every,
        )
        while self.state.epoch < self.spec.epochs:
            self._train_epoch()
            self._end_epoch()
        return self.state

    def _record_graphs(self) -> None:
        """Every batch shape the remaining epochs use, recorded before the first step; the
        time it takes counts as training time. No-op without CUDA graphs."""
        step, batching, train = self.setup.step, self.plan.batching, self.data.train
        if not step.use_graphs:
            return
        started = time.perf_counter()
        shapes: dict[tuple[int, int], Any] = {}
        for indices in (i for batches in self.plan.epochs[self.state.epoch :] for i in batches):
            shapes.setdefault((batching.rows(train.lengths, indices), batching.width(train.lengths, indices)), indices)
        step.prepare([batching.collate(train, i, pad_token_id=self.data.pad_token_id) for i in shapes.values()])
        self.state.train_time_s += _elapsed(started, self.device)

    def _train_epoch(self) -> None:
        """The current epoch's remaining batches, with a checkpoint where one is due (the
        last batch's comes after validation) and on SIGTERM."""
        state, train = self.state, self.data.train
        batches = self.plan.epochs[state.epoch]
        segment_start = time.perf_counter()
        for indices in batches[state.batch_in_epoch :]:
            self.loss_window += self.setup.step(
                self.plan.batching.collate(train, indices, pad_token_id=self.data.pad_token_id)
            )
            state.advance(tokens=int(train.lengths[indices].sum()))  # one optimizer step done
            ends_epoch = state.batch_in_epoch == len(batches)
            if state.global_step % self.plan.log_every == 0 or ends_epoch:
                self._log_loss()
            self.reporter.tick(
                step=state.global_step,
                epoch=state.epoch + state.batch_in_epoch / len(batches),
                tokens=state.train_tokens,
                # Read (a host sync) only when a timed line is due.
                window_loss=lambda: (state.loss_sum + self.loss_window.item()) / max(state.loss_count, 1),
            )
            if self.stop.is_set() or (self._checkpoint_due() and not ends_epoch):
                state.train_time_s += _elapsed(segment_start, self.device)
                state.loss_sum += self._read_loss()
                self._save_checkpoint()
                if self.stop.is_set():
                    log.warning("SIGTERM: checkpoint saved at step %d; exiting so a rerun resumes", state.global_step)
                    raise Preempted(f"preempted at step {state.global_step}")
                segment_start = time.perf_counter()
        state.train_time_s += _elapsed(segment_start, self.device)

    def _log_loss(self) -> None:
        """A point of the loss curve: the mean loss since the last one."""
        state = self.state
        mean = (state.loss_sum + self._read_loss()) / state.loss_count
        epochs_done = self.plan.epochs_done(state)
        state.loss_curve.append(
            {"step": state.global_step, "epoch": epochs_done, "loss": mean, "lr": current_lr(self.setup.scheduler)}
        )
        self.reporter.logged(
            step=state.global_step,
            epoch=epochs_done,
            loss=mean,
            lr=current_lr(self.setup.scheduler),
            tokens=state.train_tokens,
            memory=peak_memory(self.device, earlier=state.peak_memory),
        )
        state.loss_sum, state.loss_count = 0.0, 0

    def _read_loss(self) -> float:
        """The loss summed on the device since the last read (a host sync); Diverged if it is not finite."""
        state, window_sum = self.state, self.loss_window.item()
        self.loss_window.zero_()
        if not math.isfinite(window_sum):
            kind = "NaN" if math.isnan(window_sum) else "infinite"
            first, step = self.checked_through + 1, state.global_step
            where = f"at step {step}" if step == first else f"between steps {first} and {step}"
            state.loss_curve.append(
                {
                    "step": step,
                    "epoch": self.plan.epochs_done(state),
                    "loss": None,
                    "lr": current_lr(self.setup.scheduler),
                }
            )
            raise self._diverged(f"training loss became {kind} {where} of {self.plan.total_steps}")
        self.checked_through = state.global_step
        return window_sum

    def _checkpoint_due(self) -> bool:
        spec = self.spec
        due_by_steps = spec.checkpoint_every_steps and self.state.global_step % spec.checkpoint_every_steps == 0
        due_by_time = (
            spec.checkpoint_every_minutes is not None
            and time.monotonic() - self.last_checkpoint > 60 * spec.checkpoint_every_minutes
        )
        return bool(due_by_steps or due_by_time)

    def _end_epoch(self) -> None:
        """Validate, keep the epoch's weights if they are the best so far, and checkpoint
        at the epoch boundary (whatever the time-based setting) unless it was the last."""
        state = self.state
        result = validate(
            self.setup.model,
            self.data.validation,
            spec=self.spec,
            num_labels=self.data.num_labels,
            precision=self.setup.precision,
            pad_token_id=self.data.pad_token_id,
            device=self.device,
            on_batch=self.reporter.batches,
        )
        if result is None:
            raise self._diverged(
                f"validation logits are not finite after epoch {state.epoch + 1} (step {state.global_step})"
            )
        _record_validation(state, result, metric=self.spec.metric)
        self.reporter.validated(
            epoch=state.epoch + 1,
            step=state.global_step,
            accuracy=result.accuracy,
            loss=result.loss,
            score=result.score,
        )
        if state.best is None or result.score > state.best.val_score:
            state.best = BestEpoch(
                epoch=state.epoch + 1,
                val_accuracy=result.accuracy,
                val_score=result.score,
                weights={n: p.detach().to("cpu", copy=True) for n, p in self.setup.trainable},
                degenerate=result.degenerate,
            )
        state.epoch += 1
        state.batch_in_epoch = 0
        if state.epoch < self.spec.epochs:
            self._save_checkpoint()

    def _save_checkpoint(self) -> None:
        state, setup = self.state, self.setup
        started = time.perf_counter()
        state.peak_memory = peak_memory(self.device, earlier=state.peak_memory)
        weights = {n: p.detach().cpu() for n, p in setup.trainable}
        # A finite loss does not prove finite weights: the step that read it may have
        # broken them. A checkpoint resumed from must never hold a diverged run.
        broken = [n for n, tensor in weights.items() if not bool(torch.isfinite(tensor).all())]
        if broken:
            raise self._diverged(
                f"weights became non-finite by step {state.global_step} ({len(broken)} tensors, e.g. {broken[0]})"
            )
        ckpt.save_checkpoint(
            _checkpoint_payload(self.spec, setup, state, weights), directory=self.checkpoint_dir, step=state.global_step
        )
        state.checkpoint_time_s += time.perf_counter() - started
        self.last_checkpoint = time.monotonic()

    def _diverged(self, what: str) -> Diverged:
        spec = self.spec
        settings = (
            f"learning_rate {spec.learning_rate:g}, {self.setup.learning_rate:.3g} as applied; max_grad_norm "
            f"{'null' if spec.max_grad_norm is None else f'{spec.max_grad_norm:g}'}): lower "
            f"strategies.{spec.strategy}.learning_rate"
        )
        return Diverged(f"{what} ({settings}", loss_curve=self.state.loss_curve, val_curve=self.state.val_curve)


def _record_validation(state: TrainState, result: Validation, *, metric: str) -> None:
    """An epoch's validation: a point of the validation curve, and its log line."""
    state.val_curve.append(
        {
            "step": state.global_step,
            "epoch": state.epoch + 1,
            **result.scores,  # accuracy and every other metric the task has
            "loss": result.loss,
            "predicted_classes": result.predicted_classes,
        }
    )
    log.log(
        logging.WARNING if result.degenerate else logging.INFO,
        "epoch %d: validation accuracy %.4f%s loss %.4f%s",
        state.epoch + 1,
        result.accuracy,
        "" if metric == "accuracy" else f" {metric} {result.score:.4f}",
        result.loss,
        f" ({result.degenerate})" if result.degenerate else "",
    )


def _checkpoint_payload(
    spec: RunSpec, setup: TrainSetup, state: TrainState, weights: dict[str, torch.Tensor]
) -> dict[str, Any]:
    """What a checkpoint holds: enough to resume the run exactly where it stopped."""
    return {
        "spec": spec.to_dict(),
        "precision": setup.precision.name,
        "state": state.to_checkpoint(),
        "trainable": weights,
        "optimizer": setup.optimizer.state_dict(),
        "scheduler": setup.scheduler.state_dict(),
        "rng": rng_state(),
        # What the method keeps between steps beyond its weights (AdaLoRA's importance scores).
        "method_state": None if setup.method is None else setup.method.state_dict(),
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class Validation:
    scores: dict[str, float]  # every metric the task has (ftcompare.contract.metrics.all_scores)
    metric: str  # the primary one: what the best epoch is chosen on
    loss: float
    predicted_classes: int
    # One class for every review: what a model whose updates blew up (the loss in the
    # hundreds) or collapsed predicts; its accuracy is that class's share, not skill.
    degenerate: str | None

    @property
    def accuracy(self) -> float:
        return self.scores["accuracy"]

    @property
    def score(self) -> float:
        return self.scores[self.metric]


def validate(
    model: torch.nn.Module,
    split: TokenizedSplit,
    *,
    spec: RunSpec,
    num_labels: int,
    precision: Precision,
    pad_token_id: int,
    device: torch.device,
    on_batch: Callable[[int, int], None] | None = None,
) -> Validation | None:
    """Every metric and the loss on the validation split; None where the logits are not finite.
    `on_batch(done, total)` after each batch (a job's progress)."""
    logits = predict_logits(
        model,
        split,
        batch_size=spec.eval_batch_size,
        pad_token_id=pad_token_id,
        pad_to_multiple_of=spec.pad_to_multiple_of,
        device=device,
        precision=precision,
        max_tokens=spec.max_tokens_per_batch,
        on_batch=on_batch,
    )
    if not np.isfinite(logits).all():
        return None
    predicted = logits.argmax(axis=1)
    classes = np.unique(predicted)
    return Validation(
        scores=all_scores(split.labels, predicted, num_labels=num_labels),
        metric=spec.metric,
        loss=softmax_cross_entropy(logits, split.labels),
        predicted_classes=len(classes),
        degenerate=f"all {len(predicted)} validation predictions are class {classes[0]}" if len(classes) == 1 else None,
    )


def run_metrics(
    state: TrainState,
    *,
    spec: RunSpec,
    setup: TrainSetup,
    plan: TrainPlan,
    counts: dict[str, Any],
    adapter_size_mb: float | None,
    data: RunData,
    device: torch.device,
) -> dict[str, Any]:
    """A finished run's numbers, as its record (train.json) has them."""
    train_time, best = state.train_time_s, state.best
    return {
        "train_time_s": train_time,
        "checkpoint_time_s": state.checkpoint_time_s,
        "tokens_per_s": state.train_tokens / train_time if train_time > 0 else None,
        "train_tokens": state.train_tokens,
        "optimizer_steps": state.global_step,
        "best_epoch": best.epoch,
        "best_val_accuracy": best.val_accuracy,
        # What the best epoch was chosen on, and its score (every metric per epoch: val_curve).
        "best_val_metric": spec.metric,
        "best_val_score": best.val_score,
        # Set when the chosen epoch predicted one class for every validation review.
        "degenerate_validation": best.degenerate,
        "effective_learning_rate": setup.learning_rate,
        "mean_reviews_per_step": plan.reviews_per_step,
        "precision": setup.precision.name,
        **counts,
        "adapter_size_mb": adapter_size_mb,
        "resumed_from_steps": state.resumed_from_steps,
        "cuda_graphs": setup.step.describe(),
        # Text tokens per review: max_length, or fewer where virtual tokens take positions.
        "text_max_length": data.text_length,
        **peak_memory(device, earlier=state.peak_memory),
    }


def _elapsed(start: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # once per segment, so the clock sees finished work
    return time.perf_counter() - start


CHECKPOINT_KEYS = ("spec", "precision", "state", "trainable", "optimizer", "scheduler", "rng")


def _checkpoint_problem(saved: Any, *, spec: RunSpec, precision: Precision, shapes: dict[str, tuple]) -> str | None:
    """Why `saved` is not one of this run's checkpoints, or None (also for one of other settings: see _resume)."""
    if not isinstance(saved, dict) or not isinstance(saved.get("spec"), dict):
        return "not a training checkpoint: no settings ('spec') in it"
    if saved["spec"] != spec.to_dict() or saved.get("precision") != precision.name:
        return None  # a checkpoint of other settings: handled by _resume
    if missing := [key for key in CHECKPOINT_KEYS if key not in saved]:
        return f"not a training checkpoint: it lacks {missing}"
    weights = saved["trainable"]
    if not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        return "not a training checkpoint: 'trainable' is not a mapping of tensors"
    if {name: tuple(tensor.shape) for name, tensor in weights.items()} != shapes:
        return "its parameters do not fit this model (other names or shapes)"
    return None


def _resume(directory: Path, *, spec: RunSpec, setup: TrainSetup) -> TrainState | None:
    """Restore the newest good checkpoint into `setup` and return its state; None if there is none.

    A checkpoint that loads but is not one of this run's (not a mapping of the expected
    parts, parameters of other names or shapes) is moved aside and the next older one
    tried; one made with other settings or precision means the run starts from scratch."""
    precision, trainable = setup.precision, setup.trainable
    shapes = {name: tuple(param.shape) for name, param in trainable}
    found = ckpt.load_latest_checkpoint(
        directory, check=lambda saved: _checkpoint_problem(saved, spec=spec, precision=precision, shapes=shapes)
    )
    if found is None:
        return None
    saved, path = found
    if saved["spec"] != spec.to_dict():
        current = spec.to_dict()
        changed = sorted(k for k in {*saved["spec"], *current} if saved["spec"].get(k) != current.get(k))
        log.warning("checkpoint %s was made with other settings (%s): starting from scratch", path, changed)
        ckpt.remove_checkpoints(directory)
        return None
    if saved.get("precision") != precision.name:
        log.warning(
            "checkpoint %s was made at precision %s, this run trains at %s: starting from scratch",
            path,
            saved.get("precision"),
            precision.name,
        )
        ckpt.remove_checkpoints(directory)
        return None
    try:
        with torch.no_grad():
            for name, param in trainable:
                param.copy_(saved["trainable"][name])
        setup.optimizer.load_state_dict(saved["optimizer"])
        setup.scheduler.load_state_dict(saved["scheduler"])
        state = TrainState.from_checkpoint(saved["state"])
        state.resumed_from_steps = [*state.resumed_from_steps, state.global_step]
        set_rng_state(saved["rng"])
        if setup.method is not None and saved.get("method_state") is not None:
            setup.method.load_state_dict(saved["method_state"])
    except Exception as exc:  # malformed parts; the objects are half restored, so this run cannot go on
        ckpt.quarantine(path, f"cannot be restored: {type(exc).__name__}: {exc}"[:500])
        raise RuntimeError(
            f"checkpoint {path} could not be restored ({exc}); it was moved aside, and a rerun "
            "resumes from the previous one or starts from scratch"
        ) from exc
    log.warning(
        "resumed from step %d (epoch %d, batch %d) using %s",
        state.global_step,
        state.epoch,
        state.batch_in_epoch,
        path.name,
    )
    return state
