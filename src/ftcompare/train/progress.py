"""What a running job shows while it runs: progress lines in its log, a small progress
file that `ftcompare status` reads, and TensorBoard event files.

- Lines: at every log point (`log_every_steps` optimizer steps; for inference, batches)
  and, between log points, whenever HEARTBEAT_S has passed since the last line, so a slow
  step never leaves a log silent for longer. One plain line per event: log files get no
  carriage-return bars.
- The progress file (JSON, replaced atomically: a reader never sees half of one) holds
  the latest numbers, the process (pid, host) and `updated_at`. A heartbeat thread
  rewrites it every HEARTBEAT_S even while no step ends (loading the model, recording
  CUDA graphs, a long validation), so a file several heartbeats old means the job is
  gone (ftcompare.use.status).
- TensorBoard: one event folder per run. A fresh start clears it (a rerun's curves never
  pile onto a stale run's); a resumed run keeps the events up to its checkpoint's step,
  drops the later ones the killed process wrote, and continues: no step twice.

Nothing here feeds back into training: the reporter is handed numbers the loop has
already computed, and adds no host synchronisation per step. Torch-free to import:
torch.utils.tensorboard is imported when a run opens its writer.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ftcompare.contract import atomic_write_bytes

log = logging.getLogger(__name__)

# The longest a log goes without a progress line and the progress file without a
# refresh; ftcompare.use.status counts a file as stale after a few of these.
HEARTBEAT_S = 30.0
PROGRESS_FORMAT = 1
# Every run's event folder lies under this one: `tensorboard --logdir results/tensorboard`.
TENSORBOARD_ROOT = Path("results") / "tensorboard"
EVENTS_GLOB = "events.out.tfevents.*"


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobFiles:
    """Where a job reports besides its log: None writes nothing there."""

    progress: Path | None = None
    tensorboard: Path | None = None


def tensorboard_dir(
    *, task: str, model: str, strategy: str, seed: int | str, trial: str | None = None, root: Path = TENSORBOARD_ROOT
) -> Path:
    """A run's event folder: <task>/<model>/<strategy>/seed<N>, a trial's
    <task>/<model>/<strategy>/tuning/<trial>/seed<N>, so that TensorBoard lists each
    strategy's runs together, within their cell of the study."""
    parts = [task, model, strategy, *(["tuning", trial] if trial else []), f"seed{seed}"]
    return Path(root).joinpath(*parts)


def progress_path(attempt_path: str | Path) -> Path:
    """A job's progress file, beside its attempt file (ftcompare.contract.records), so that like it
    it is no output of the job: attempt.json -> progress.json, eval-attempt.json ->
    eval-progress.json."""
    attempt_path = Path(attempt_path)
    return attempt_path.with_name(attempt_path.name.replace("attempt", "progress"))


def tensorboard_enabled(config: Mapping[str, Any]) -> bool:
    """`monitoring.tensorboard` of a job's config as Snakemake hands it over (not
    validated: config/config.yaml's value where the study's config does not say)."""
    from ftcompare.plan import DEFAULT_CONFIG, load_yaml

    defaults = load_yaml(DEFAULT_CONFIG)["monitoring"]
    return bool({**defaults, **(config.get("monitoring") or {})}["tensorboard"])


def job_files(
    *, attempt: str | Path, wildcards: Mapping[str, Any], config: Mapping[str, Any] | None = None
) -> JobFiles:
    """What a rule script passes to its job: the progress file beside `attempt`, and with
    a `config` whose TensorBoard switch is on, the run's event folder."""
    tensorboard = None
    if config is not None and tensorboard_enabled(config):
        tensorboard = tensorboard_dir(
            task=wildcards["task"],
            model=wildcards["model"],
            strategy=wildcards["strategy"],
            seed=wildcards["seed"],
            trial=wildcards.get("trial"),
        )
    return JobFiles(progress=progress_path(attempt), tensorboard=tensorboard)


def duration(seconds: float | None) -> str:
    """1:02:03 for 3723 s; '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def clock_time(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix).strftime("%H:%M")


class Reporter:
    """One job's progress: lines in its log and, with `files`, its progress file and
    TensorBoard events. Use it as a context manager where it writes files: the heartbeat
    runs inside the block, and a job that leaves it by an exception (preemption) is
    recorded as stopped, with that exception as its reason.

    Training calls start_training once its plan (and any checkpoint) is known, logged at
    each log point, tick after every optimizer step, batches from inference and validated
    after each validation; the job calls finish with the run's status."""

    def __init__(
        self,
        *,
        label: str,
        kind: str,
        files: JobFiles | None = None,
        identity: Mapping[str, Any] | None = None,
        log_every: int = 20,
        heartbeat_s: float = HEARTBEAT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.kind, self.files = label, kind, files or JobFiles()
        self.log_every, self.heartbeat_s, self._clock = max(1, log_every), heartbeat_s, clock
        self._curves = _Curves()
        self._finished = False
        started = time.time()
        snapshot: dict[str, Any] = {
            "format": PROGRESS_FORMAT,
            "kind": kind,
            **(identity or {}),
            "state": "running",
            "phase": "starting",
            "reason": None,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "heartbeat_s": heartbeat_s,
            "started_at": started,
            "updated_at": started,
            "step": None,
            "total_steps": None,
            "epoch": None,
            "epochs": None,
            "batches": None,
            "loss": None,
            "tokens_per_s": None,
            "eta_s": None,
            "best_val_accuracy": None,
            # On the task's primary metric (identity's `metric`), which ftcompare status shows.
            "best_val_score": None,
        }
        self._file = _ProgressFile(self.files.progress, snapshot, heartbeat_s=heartbeat_s)
        self.snapshot, self._lock = self._file.snapshot, self._file.lock
        now = clock()
        self._last_line = now
        self._t0 = now
        self._paused = 0.0  # validation time, left out of the seconds per step
        self._val_seconds: list[float] = []
        self._last_step_at = now
        self._window = (now, 0)
        self._start_step = 0
        self._epochs_done = 0
        self._batch_t0: float | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Reporter:
        self._file.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._finished:
            reason = None if exc is None else f"{exc_type.__name__}: {exc}".splitlines()[0][:500]
            self.finish("stopped", reason)

    def _publish(self) -> None:
        self._file.publish()

    def _update(self, **values: Any) -> None:
        self._file.update(**values)

    def finish(self, status: str, reason: str | None = None) -> None:
        """The job's outcome (ok, skipped, failed, or stopped when it was interrupted)."""
        self._finished = True
        self._file.stop()
        first_line = (str(reason).splitlines() or [""])[0][:500] if reason is not None else None
        self._update(state=str(status), reason=first_line, phase="done", eta_s=0.0 if status == "ok" else None)
        self._file.write()
        self._curves.close()

    # ------------------------------------------------------------------ training

    def start_training(
        self,
        *,
        total_steps: int,
        epochs: int,
        step: int = 0,
        epoch: int = 0,
        tokens: int = 0,
        best: float | None = None,
        best_score: float | None = None,
        log_every: int | None = None,
    ) -> None:
        """The run's plan, and where it starts: step 0, or the step, completed epochs,
        tokens and best validation accuracy (and score on the primary metric) of the
        checkpoint it resumed from; `log_every`: the steps between its log points, where the
        loop logs more often than it was told."""
        if log_every is not None:
            self.log_every = max(1, log_every)
        now = self._clock()
        self._t0 = self._last_step_at = self._last_line = now
        self._window = (now, tokens)
        self._start_step, self._epochs_done = step, epoch
        self._update(
            phase="training",
            step=step,
            total_steps=total_steps,
            epochs=epochs,
            epoch=float(epoch),
            best_val_accuracy=best,
            best_val_score=best_score,
        )
        if self.files.tensorboard is not None:
            self._curves.open(self.files.tensorboard, resume_step=step, label=self.label)
        log.info(
            "%s: %s at step %d of %d (%d epochs), a line every %d steps or %.0f s",
            self.label,
            "resumed" if step else "training starts",
            step,
            total_steps,
            epochs,
            self.log_every,
            self.heartbeat_s,
        )
        self._publish()

    def tick(self, *, step: int, epoch: float, tokens: int, window_loss: Callable[[], float]) -> None:
        """After every optimizer step: cheap unless HEARTBEAT_S passed since the last line;
        then a line with the loss averaged since the last log point (`window_loss`,
        called only then: reading it syncs with the device)."""
        now = self._clock()
        self._last_step_at = now
        with self._lock:
            self.snapshot.update(step=step, epoch=epoch, phase="training")
        if now - self._last_line >= self.heartbeat_s:
            seconds = now - self._window[0]
            rate = (tokens - self._window[1]) / seconds if seconds > 0 else None
            self._line(loss=window_loss(), rate=rate, now=now)

    def logged(
        self,
        *,
        step: int,
        epoch: float,
        loss: float,
        lr: float,
        tokens: int,
        memory: Mapping[str, float | None] | None = None,
    ) -> None:
        """At a log point: the mean loss since the previous one, the learning rate and the
        peaks so far (steps.peak_memory) go to the log, the progress file and TensorBoard."""
        now = self._clock()
        seconds = now - self._window[0]
        rate = (tokens - self._window[1]) / seconds if seconds > 0 else None
        self._window = (now, tokens)
        with self._lock:
            self.snapshot.update(step=step, epoch=epoch, phase="training")
        self._line(loss=loss, lr=lr, rate=rate, now=now)
        self._curves.train(step, loss=loss, lr=lr, rate=rate, memory=memory)

    def validated(self, *, epoch: int, step: int, accuracy: float, loss: float, score: float | None = None) -> None:
        """After each validation (the loop logs its own line for it); `score`: on the task's primary metric."""
        now = self._clock()
        spent = now - self._last_step_at
        self._val_seconds.append(spent)
        self._paused += spent
        self._window = (now, self._window[1])  # tokens per second count training time only
        self._epochs_done = epoch
        self._last_step_at = now
        with self._lock:
            best, best_score = self.snapshot["best_val_accuracy"], self.snapshot["best_val_score"]
            if score is not None:
                self.snapshot["best_val_score"] = score if best_score is None else max(best_score, score)
            self.snapshot.update(
                best_val_accuracy=accuracy if best is None else max(best, accuracy),
                val_accuracy=accuracy,
                batches=None,
                phase="training",
                eta_s=self._eta(now),
            )
        self._publish()
        self._curves.validation(step, accuracy=accuracy, loss=loss)

    def _eta(self, now: float) -> float | None:
        """Seconds left: the steps to go at this process's pace (validation left out),
        plus each validation to go at the last one's length."""
        step, total, epochs = (self.snapshot.get(k) for k in ("step", "total_steps", "epochs"))
        if step is None or total is None:
            return None
        done = step - self._start_step
        if done <= 0:
            return None
        per_step = (now - self._t0 - self._paused) / done
        validations_left = max(0, (epochs or 0) - self._epochs_done)
        per_validation = self._val_seconds[-1] if self._val_seconds else 0.0
        return (total - step) * per_step + validations_left * per_validation

    def _line(self, *, loss: float | None, rate: float | None, now: float, lr: float | None = None) -> None:
        self._last_line = now
        eta = self._eta(now)
        with self._lock:
            self.snapshot.update(loss=_finite(loss), tokens_per_s=_finite(rate), eta_s=_finite(eta))
            step, total, epoch, epochs = (self.snapshot[k] for k in ("step", "total_steps", "epoch", "epochs"))
        parts = [
            self.label,
            f"epoch {epoch:.2f}/{epochs}",
            f"step {step}/{total} ({100 * step / total:.0f}%)",
            f"loss {loss:.4f}" if loss is not None else "loss ?",
        ]
        if lr is not None:
            parts.append(f"lr {lr:.3g}")
        if rate is not None:
            parts.append(f"{rate:,.0f} tok/s")
        parts.append(f"elapsed {duration(now - self._t0)}")
        parts.append(f"ETA {duration(eta)}" + ("" if eta is None else f" (~{clock_time(time.time() + eta)})"))
        log.info("  ".join(parts))
        self._publish()

    # ------------------------------------------------------------------ inference

    def batches(self, done: int, total: int) -> None:
        """After each inference batch: validation inside training, the test split in an
        evaluate job. A line every `log_every` batches or HEARTBEAT_S."""
        now = self._clock()
        if done == 1 or self._batch_t0 is None:
            self._batch_t0, self._last_line = now, now
        what = "test" if self.kind == "eval" else "validation"
        with self._lock:
            self.snapshot.update(batches=[done, total], phase="testing" if self.kind == "eval" else "validating")
            # Timed from the first batch's end: the batches since then (none yet: unknown).
            per_batch = (now - self._batch_t0) / (done - 1) if done > 1 else None
            if self.kind == "eval":
                self.snapshot["eta_s"] = None if per_batch is None else (total - done) * per_batch
        if done % self.log_every == 0 or now - self._last_line >= self.heartbeat_s:
            self._last_line = now
            log.info(
                "%s  %s batch %d/%d (%.0f%%)  elapsed %s  %s left %s",
                self.label,
                what,
                done,
                total,
                100 * done / total,
                duration(now - self._batch_t0),
                what,
                duration(None if per_batch is None else (total - done) * per_batch),
            )
            self._publish()


class _ProgressFile:
    """A job's progress file, which `ftcompare status` reads: the snapshot, written atomically
    off the training thread (an atomic write fsyncs) at each change it is told of and every
    heartbeat. No path: nothing is written."""

    def __init__(self, path: Path | None, snapshot: dict[str, Any], *, heartbeat_s: float) -> None:
        self.path, self.snapshot, self.heartbeat_s = path, snapshot, heartbeat_s
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed = False

    def start(self) -> None:
        if self.path is not None:
            self.write()
            self._thread = threading.Thread(target=self._beat, name="progress-heartbeat", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        while True:
            self._changed.wait(self.heartbeat_s)
            if self._stop.is_set():
                return
            self._changed.clear()
            self.write()

    def publish(self) -> None:
        """Have the snapshot written: by the heartbeat thread where it runs, else now."""
        if self._thread is not None:
            self._changed.set()
        else:
            self.write()

    def write(self) -> None:
        if self.path is None:
            return
        with self.lock:
            self.snapshot["updated_at"] = time.time()
            data = json.dumps(self.snapshot, allow_nan=False, default=str).encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, data)
        except (OSError, ValueError) as exc:  # never fail a run for its progress file
            if not self._failed:
                log.warning("progress file %s not written: %s", self.path, exc)
            self._failed = True

    def update(self, **values: Any) -> None:
        with self.lock:
            self.snapshot.update({key: _finite(value) for key, value in values.items()})

    def stop(self) -> None:
        """End the heartbeat (the caller writes the last snapshot)."""
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


class _Curves:
    """A run's TensorBoard events: the training and validation curves, and the memory peaks.
    A side product: where they cannot be opened, the run trains without them."""

    def __init__(self) -> None:
        self._writer: Any = None

    def open(self, folder: Path, *, resume_step: int, label: str) -> None:
        try:
            self._writer = open_events(folder, resume_step=resume_step)
        except (ImportError, OSError) as exc:
            log.warning("no TensorBoard events for %s: %s", label, exc)

    def train(
        self, step: int, *, loss: float, lr: float, rate: float | None, memory: Mapping[str, float | None] | None
    ) -> None:
        if self._writer is None:
            return
        self._writer.add_scalar("train/loss", loss, step)
        self._writer.add_scalar("train/learning_rate", lr, step)
        if rate is not None:
            self._writer.add_scalar("train/tokens_per_s", rate, step)
        for key, value in (memory or {}).items():
            if value is not None:
                self._writer.add_scalar(f"memory/{key.removeprefix('peak_')}", value, step)

    def validation(self, step: int, *, accuracy: float, loss: float) -> None:
        if self._writer is None:
            return
        self._writer.add_scalar("validation/accuracy", accuracy, step)
        self._writer.add_scalar("validation/loss", loss, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _finite(value: Any) -> Any:
    """JSON has no NaN: a non-finite number is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def open_events(folder: Path, *, resume_step: int) -> Any:
    """A TensorBoard writer for a run's event folder. From step 0 the folder starts empty;
    resumed at `resume_step`, its events up to that step are kept (one per tag and step:
    a resume killed half-way leaves copies, read once here) and the later ones dropped,
    in a new file written before the old ones are removed."""
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(folder)
    if resume_step == 0:
        shutil.rmtree(folder, ignore_errors=True)
        return SummaryWriter(str(folder), flush_secs=int(HEARTBEAT_S))
    old = sorted(folder.glob(EVENTS_GLOB))
    kept = read_scalars(old, through_step=resume_step)
    writer = SummaryWriter(str(folder), flush_secs=int(HEARTBEAT_S))
    for (tag, step), (value, wall_time) in sorted(kept.items(), key=lambda item: (item[0][1], item[1][1])):
        writer.add_scalar(tag, value, step, walltime=wall_time)
    writer.flush()
    for path in old:
        path.unlink(missing_ok=True)
    return writer


def read_scalars(paths: list[Path], *, through_step: int | None = None) -> dict[tuple[str, int], tuple[float, float]]:
    """(tag, step) -> (value, wall time) of the scalar events in `paths`, with TensorBoard's
    own reader (its events as written: scalars as simple values); a later event of the
    same tag and step replaces an earlier one."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    scalars: dict[tuple[str, int], tuple[float, float]] = {}
    for path in paths:
        for event in LegacyEventFileLoader(str(path)).Load():
            if not event.HasField("summary") or (through_step is not None and event.step > through_step):
                continue
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars[(value.tag, event.step)] = (value.simple_value, event.wall_time)
    return scalars
