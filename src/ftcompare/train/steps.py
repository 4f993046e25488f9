"""One run's training recipe and its optimizer step, as the training loop and the bench both run them.

`setup_training` builds what trains a run (model, optimizer, schedule, step) from its
settings; the loop, bench/throughput.py and bench/graph_check.py all call it.

`TrainStep` does forward (under autocast), backward, gradient clipping, the optimizer and
scheduler step, eagerly or, with `cuda_graphs`, by replaying a CUDA graph per batch shape:
- at about 8k tokens per step roberta-base's kernels are short, and an eager step spends
  much of its time launching ~1,500 of them from Python; a replay launches them at once;
- each shape's step is recorded once (`prepare` records them all up front, most tokens
  first, so that the smaller graphs reuse the larger ones' memory), after one warm-up
  forward and backward outside the graph that leaves weights and optimizer state
  untouched; `bucket_width` keeps the number of shapes small;
- gradients, Adam's state and the learning rate live in tensors the graphs point at, so
  the optimizer is built with `capturable=True` (the rate is a device tensor that the
  scheduler updates in place);
- the graphs share one memory pool: they never run concurrently, and nothing they leave
  behind is read after the next replay (the loss is copied out at once);
- if recording fails (an operation that cannot be captured), the run goes on eagerly and
  says why in its record; so does a method whose step does more than a graph can hold
  (`after_step` with a `graph_refusal`: AdaLoRA's rank re-allocation).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ftcompare.model import Precision, autocast, build_model, method_step, resolve_precision

if TYPE_CHECKING:
    from ftcompare.methods import RunSpec

log = logging.getLogger(__name__)


def build_optimizer(
    trainable: list[tuple[str, torch.nn.Parameter]],
    *,
    weight_decay: float,
    learning_rate: float,
    device: torch.device,
    capturable: bool = False,
) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and LayerNorm weights (the 1-d tensors), as in BERT/RoBERTa.
    `capturable`: the rate and step counts live on the device, so a CUDA graph can hold the update."""
    decay = [p for _, p in trainable if p.ndim >= 2]
    no_decay = [p for _, p in trainable if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if capturable:
        for group in groups:  # one tensor per group: the scheduler fills each in place
            group["lr"] = torch.tensor(learning_rate, dtype=torch.float32, device=device)
    return torch.optim.AdamW(
        groups,
        lr=learning_rate,
        # Fused: one kernel for the whole update instead of several per tensor. (On a CPU
        # only tests ask for `capturable`, which there only the fused kernel accepts.)
        fused=device.type == "cuda" or capturable,
        capturable=capturable,
    )


def applied_learning_rate(spec: RunSpec, *, reviews_per_step: float | None = None) -> float:
    """The rate the optimizer applies. `learning_rate` is set for `lr_reference_batch_size`
    reviews per step; other batch sizes scale it by the square root of the ratio, the scaling
    rule that holds for Adam (Malladi et al., 2022), so a bigger batch for speed keeps the same
    dynamics. With a token budget the batches vary in size: pass their mean
    (`reviews_per_step`); otherwise the batch is `batch_size`."""
    reviews = spec.batch_size if reviews_per_step is None else reviews_per_step
    return spec.learning_rate * (reviews / spec.lr_reference_batch_size) ** 0.5


def build_scheduler(optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(warmup_ratio * total_steps)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:  # linear warm-up, then linear decay to zero
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def current_lr(scheduler: Any) -> float:
    return float(scheduler.get_last_lr()[0])  # a tensor when the optimizer is capturable


class CudaGraphRecorder:
    """Records steps as CUDA graphs (objects with `replay()` and `reset()`). Tests stand
    in a recorder that replays by calling."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pool = torch.cuda.graph_pool_handle()
        # One stream for every warm-up: the caching allocator reuses a freed block only
        # on the stream it was used on, and a new stream per shape held 16 warm-ups'
        # activations at once (full fine-tuning: 56 GB reserved on the H200).
        self.side = torch.cuda.Stream(device)

    def warm(self, fn: Callable[[], None]) -> None:
        """Run `fn` once outside any graph: lazy initialisation (cuBLAS, autograd's
        streams) must not happen while recording."""
        current = torch.cuda.current_stream(self.device)
        self.side.wait_stream(current)
        with torch.cuda.stream(self.side):
            fn()
        current.wait_stream(self.side)

    def release_cache(self) -> None:
        torch.cuda.empty_cache()

    def capture(self, fn: Callable[[], None]) -> Any:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            fn()
        return graph


@dataclasses.dataclass
class _Recorded:
    graph: Any  # has replay(), and reset() to free what it holds
    inputs: dict[str, torch.Tensor]


class TrainStep:
    """`step(batch)`: one optimizer step on a batch from `TrainBatching.collate` (CPU
    tensors); returns the batch's mean loss, detached, on the device."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None,
        trainable: list[torch.nn.Parameter],
        max_grad_norm: float | None,
        device: torch.device,
        precision: Precision,
        cuda_graphs: bool = False,
        recorder: Any | None = None,
        after_step: Callable[[], None] | None = None,
        graph_refusal: str | None = None,
    ) -> None:
        """`after_step`: what the method does after each optimizer step, before the gradients
        are cleared (models.method_step); `graph_refusal`, why a graph cannot hold it."""
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.trainable, self.max_grad_norm = trainable, max_grad_norm
        self.device, self.precision = device, precision
        self.after_step = after_step
        self.graphs_requested = cuda_graphs
        # CUDA graphs exist on CUDA only: elsewhere the same settings train eagerly.
        self.use_graphs = cuda_graphs and (device.type == "cuda" or recorder is not None)
        self.graph_failure: str | None = None
        if self.use_graphs and after_step is not None:
            self.use_graphs, self.graph_failure = False, graph_refusal or "the method's step cannot be recorded"
            log.info("training eagerly: %s", self.graph_failure)
        self._recorder = recorder
        self._recorded: dict[tuple[tuple[str, tuple[int, ...]], ...], _Recorded] = {}
        self._loss: torch.Tensor | None = None

    @property
    def graph_shapes(self) -> int:
        return len(self._recorded)

    def describe(self) -> dict[str, Any]:
        """What the run record says about how steps ran."""
        return {
            "requested": self.graphs_requested,
            "used": self.use_graphs,
            "shapes": self.graph_shapes,
            "fallback_reason": self.graph_failure,
        }

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.use_graphs:
            key = _shape_key(batch)
            if key not in self._recorded:
                self._record({key: batch})  # a shape `prepare` did not see
            recorded = self._recorded.get(key)
            if recorded is not None:
                for name, static in recorded.inputs.items():
                    static.copy_(batch[name], non_blocking=True)
                recorded.graph.replay()
                if self.scheduler is not None:
                    self.scheduler.step()
                return self._loss.clone()
        return self._eager(batch)

    def prepare(self, batches: list[dict[str, torch.Tensor]]) -> None:
        """Record the step of every batch shape among `batches` now, most tokens first, so
        that each smaller graph fits into memory the larger ones already hold. No-op
        without CUDA graphs."""
        todo: dict[tuple, dict[str, torch.Tensor]] = {}
        for batch in sorted(batches, key=lambda b: -b["input_ids"].numel()):
            key = _shape_key(batch)
            if key not in self._recorded:
                todo.setdefault(key, batch)
        if self.use_graphs and todo:
            self._record(todo)

    def release(self) -> None:
        """Free what the graphs hold (their memory, the gradient buffers) once training is over."""
        for recorded in self._recorded.values():
            if hasattr(recorded.graph, "reset"):
                recorded.graph.reset()
        self._recorded.clear()
        self._recorder, self._loss = None, None
        for param in self.trainable:
            param.grad = None

    # ---------------------------------------------------------------- eager

    def _forward_backward(self, batch: dict[str, torch.Tensor], *, cache: bool = True) -> torch.Tensor:
        with autocast(self.device, self.precision, cache=cache):
            loss = self.model(**batch).loss
        loss.backward()
        return loss

    def _clip(self) -> None:
        if self.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.max_grad_norm)

    def _eager(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        loss = self._forward_backward(batch)
        self._clip()
        self.optimizer.step()
        if self.after_step is not None:
            self.after_step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    # ---------------------------------------------------------------- graphs

    def _prepare_graphs(self) -> None:
        """Give everything a graph points at a fixed place, before the first recording."""
        if self._recorder is None:
            self._recorder = CudaGraphRecorder(self.device)
        for param in self.trainable:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        for group in self.optimizer.param_groups:  # a resumed optimizer may hold a plain number or a CPU tensor
            if not (isinstance(group["lr"], torch.Tensor) and group["lr"].device == self.device):
                group["lr"] = torch.tensor(float(group["lr"]), dtype=torch.float32, device=self.device)
        if not self.optimizer.state:
            # Adam creates its state on its first step. Take that step here, outside any
            # graph, with zero gradients at rate 0 (the weights do not move), then reset
            # the step counts, so that the first real step is Adam's step 1 as in eager.
            rates = [group["lr"].clone() for group in self.optimizer.param_groups]
            for group in self.optimizer.param_groups:
                group["lr"].fill_(0.0)
            self.optimizer.step()
            for group, rate in zip(self.optimizer.param_groups, rates):
                group["lr"].copy_(rate)
            for state in self.optimizer.state.values():
                state["step"].zero_()
        self._loss = torch.zeros((), dtype=torch.float32, device=self.device)

    def _warmup(self, inputs: dict[str, torch.Tensor]) -> None:
        self._forward_backward(inputs, cache=False)  # no optimizer step: weights and Adam's state stay
        self.optimizer.zero_grad(set_to_none=False)

    def _body(self, inputs: dict[str, torch.Tensor]) -> None:
        self.optimizer.zero_grad(set_to_none=False)  # in place: the graph's gradient buffers
        loss = self._forward_backward(inputs, cache=False)
        self._clip()
        self.optimizer.step()
        self._loss.copy_(loss.detach())

    def _record(self, todo: dict[tuple, dict[str, torch.Tensor]]) -> None:
        """Warm every shape up, hand back what the warm-ups cached, then record each: a
        warm-up run while earlier graphs already hold their memory would hold both."""
        rng = _get_rng(self.device)
        try:
            if self._loss is None:
                self._prepare_graphs()
            staged = {key: {name: t.to(self.device) for name, t in batch.items()} for key, batch in todo.items()}
            for inputs in staged.values():
                self._recorder.warm(lambda inputs=inputs: self._warmup(inputs))
            self._recorder.release_cache()
            recorded = {
                key: _Recorded(graph=self._recorder.capture(lambda inputs=inputs: self._body(inputs)), inputs=inputs)
                for key, inputs in staged.items()
            }
        except Exception as exc:  # e.g. an operation that cannot be captured: train eagerly instead
            self.graph_failure = f"{type(exc).__name__}: {exc}"[:500]
            self.use_graphs = False
            log.warning("CUDA graph recording failed, training eagerly from here: %s", self.graph_failure)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.release()
            return
        finally:
            _set_rng(self.device, rng)  # the warm-ups' dropout draws are not part of training
        self._recorded.update(recorded)
        log.info(
            "recorded the training step as a CUDA graph for batch shape(s) %s (%d in all)",
            [dict(k)["input_ids"] for k in recorded],
            len(self._recorded),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSetup:
    """One run's model and what trains it, as `setup_training` builds them."""

    model: torch.nn.Module  # in training mode; validation and saving use it (`step` may hold a compiled wrapper)
    precision: Precision
    trainable: list[tuple[str, torch.nn.Parameter]]
    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    step: TrainStep
    # What the method does after each optimizer step, with state of its own to checkpoint
    # (models.method_step: AdaLoRA's rank allocation); None for most methods.
    method: Any | None
    learning_rate: float  # as applied: the configured rate scaled to the mean batch


def setup_training(
    spec: RunSpec,
    *,
    num_labels: int,
    device: torch.device,
    total_steps: int,
    reviews_per_step: float,
    recorder: Any | None = None,
) -> TrainSetup:
    """The model of `spec`'s strategy and its optimizer, schedule and step, ready for the
    first step. `total_steps`: the run's optimizer steps (the schedule and AdaLoRA's rank
    budget are set in them); `reviews_per_step`: the mean batch, which sets the rate under
    a token budget. `recorder` stands in for CUDA graph recording (tests)."""
    precision = resolve_precision(requested=spec.precision, method=spec.method, device=device)
    model = build_model(spec=spec, num_labels=num_labels, device=device, precision=precision, total_steps=total_steps)
    method = method_step(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    learning_rate = applied_learning_rate(
        spec, reviews_per_step=None if spec.max_tokens_per_batch is None else reviews_per_step
    )
    graphs = spec.cuda_graphs and (device.type == "cuda" or recorder is not None)
    optimizer = build_optimizer(
        trainable,
        weight_decay=spec.weight_decay,
        learning_rate=learning_rate,
        device=device,
        capturable=graphs and method is None,  # a method step that a graph cannot hold trains eagerly
    )
    scheduler = build_scheduler(optimizer, total_steps=total_steps, warmup_ratio=spec.warmup_ratio)
    model.train()
    step = TrainStep(
        model=torch.compile(model, dynamic=True) if spec.compile else model,
        optimizer=optimizer,
        scheduler=scheduler,
        trainable=[p for _, p in trainable],
        max_grad_norm=spec.max_grad_norm,
        device=device,
        precision=precision,
        cuda_graphs=graphs,
        recorder=recorder,
        after_step=method,
        graph_refusal=None if method is None else method.graph_refusal,
    )
    return TrainSetup(
        model=model,
        precision=precision,
        trainable=trainable,
        optimizer=optimizer,
        scheduler=scheduler,
        step=step,
        method=method,
        learning_rate=learning_rate,
    )


def _shape_key(batch: dict[str, torch.Tensor]) -> tuple:
    return tuple((name, tuple(t.shape)) for name, t in sorted(batch.items()))


def _get_rng(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)
