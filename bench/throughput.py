"""Throughput and memory of the workflow's training recipe against the notebook recipe it replaces.

    python bench/throughput.py --imdb ../shared/data/imdb/train.parquet   # on a GPU
    python bench/throughput.py --quick                                   # a CPU smoke run

What it measures and how (the reference recipe, the variants, timing, the projection,
MFU, memory) is written up in BENCHMARKS.md, "How the bench measures". The last two
lines of stdout are `study_projected_s: <s>` and `study_speedup_vs_reference: <ratio>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub: the model is local and random
REPO_ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("ftcompare") is None:  # not installed (e.g. a bare GPU image): use the checkout
    sys.path.insert(0, str(REPO_ROOT / "src"))

from ftcompare.contract import allocator_setting, prefer_expandable_segments  # noqa: E402 (torch-free)

prefer_expandable_segments()  # as the workflow's jobs do; must precede CUDA's first allocation

import numpy as np  # noqa: E402
import torch  # noqa: E402

STUDY_TRAIN_REVIEWS = 25_000
STUDY_TEST_REVIEWS = 25_000
# roberta-base's tokenizer on IMDB train, for comparison and the log-normal fit.
ROBERTA_MEDIAN_TOKENS = 226
ROBERTA_FRACTION_OVER_512 = 0.14
PAD_TOKEN_ID = 1  # RobertaConfig's; random_split never draws it as a token
T0 = time.perf_counter()


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


from random_roberta import write_random_roberta  # noqa: E402

from ftcompare.contract import (  # noqa: E402
    ConfigError,
    package_versions,  # noqa: E402
)
from ftcompare.data import TokenizedSplit, TrainBatching, collate, eval_batches, padded_width  # noqa: E402
from ftcompare.methods import RunSpec  # noqa: E402
from ftcompare.model import (  # noqa: E402
    Precision,
    StrategyUnavailable,
    build_model,
    count_parameters,
    peak_memory,
    predict_logits,  # noqa: E402
    select_device,
)
from ftcompare.model import build as models  # noqa: E402
from ftcompare.plan import (  # noqa: E402
    REFERENCE_RECIPE,
    checked_config,  # noqa: E402
    load_config,
    resolve_run,
)
from ftcompare.train import TrainSetup, TrainStep, applied_learning_rate, setup_training  # noqa: E402

FP32 = Precision(autocast_dtype=None, base_dtype=torch.float32)


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lengths:
    """Token lengths (with <s> and </s>, clipped to max_length) of the train and test reviews."""

    train: np.ndarray
    test: np.ndarray
    source: str
    median_unclipped: float
    fraction_over_512: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Peak:
    device_name: str
    tflops: float
    what: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Memory:
    allocated_gb: float | None
    reserved_gb: float | None
    rss_delta_gb: float | None
    # Allocated and reserved before the block (after a collection and emptying the cache):
    # what an earlier recipe in this process left behind. The table shows peak - baseline.
    baseline_gb: float | None = None
    reserved_baseline_gb: float | None = None

    def own(self) -> tuple[float | None, float | None]:
        if self.allocated_gb is None:
            return None, None
        return self.allocated_gb - (self.baseline_gb or 0.0), self.reserved_gb - (self.reserved_baseline_gb or 0.0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RecipeResult:
    strategy: str
    recipe: str  # "reference" | "workflow"
    precision: str
    batch_size: int
    max_tokens: int | None  # padded tokens per training batch, None = no budget
    reviews_per_step: float  # mean over the epoch's batches
    eval_batch_size: int
    padding: str
    optimizer: str
    compiled: bool
    cuda_graphs: bool  # steps replayed as CUDA graphs (False also when recording failed)
    graph_fallback: str | None  # why recording failed, if it did
    setup_s: float  # one-time cost per run beyond the steps (recording graphs, compiling)
    gradient_checkpointing: bool
    trainable_params: int
    total_params: int
    warmup_s: float
    train_steps: int
    train_reviews: int
    train_real_tokens: int
    train_padded_tokens: int
    train_s: float
    eval_batches: int
    eval_reviews: int
    eval_real_tokens: int
    eval_s: float
    tokens_per_s: float  # real (non-pad) training tokens per second
    eval_tokens_per_s: float
    projected_train_s: float
    projected_eval_s: float
    memory: Memory  # training: build, warm-up (graph recording) and the timed steps
    eval_memory: Memory  # evaluation, after training's tensors are gone (as in the evaluate job)
    mfu: float | None

    @property
    def projected_s(self) -> float:
        return self.projected_train_s + self.projected_eval_s + self.setup_s


@dataclasses.dataclass(frozen=True, kw_only=True)
class StrategyResult:
    strategy: str
    reference: RecipeResult | None
    variants: dict[str, RecipeResult] = dataclasses.field(default_factory=dict)  # in --variant order
    skipped: str | None = None

    @property
    def workflow(self) -> RecipeResult | None:
        """The first variant: the config's own settings unless --variant says otherwise."""
        return next(iter(self.variants.values()), None)


# ----------------------------------------------------------------------------- inputs


def lognormal_lengths(*, count: int, seed: int) -> np.ndarray:
    """Unclipped review lengths from a log-normal fitted to roberta's IMDB tokens."""
    z = statistics.NormalDist().inv_cdf(1.0 - ROBERTA_FRACTION_OVER_512)  # ~1.080
    sigma = math.log(512 / ROBERTA_MEDIAN_TOKENS) / z  # ~0.757
    rng = np.random.default_rng([seed, 2024])
    return np.maximum(np.rint(rng.lognormal(math.log(ROBERTA_MEDIAN_TOKENS), sigma, count)), 4).astype(np.int64)


def bpe_lengths(*, parquet: Path, seed: int, train_reviews: int = 3000, vocab_size: int = 8000) -> np.ndarray:
    """Unclipped token counts of every review in `parquet`, by a byte-level BPE trained on a sample."""
    import pyarrow.parquet as pq
    from tokenizers import ByteLevelBPETokenizer

    texts = pq.read_table(parquet, columns=["text"]).column("text").to_pylist()
    rng = np.random.default_rng(seed)
    sample = [texts[i] for i in rng.permutation(len(texts))[:train_reviews]]  # files are sorted by label
    tokenizer = ByteLevelBPETokenizer()  # GPT-2/RoBERTa's scheme: bytes, no prefix space
    tokenizer.train_from_iterator(
        sample,
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        show_progress=False,
    )
    return np.asarray([len(e.ids) + 2 for e in tokenizer.encode_batch(texts)], dtype=np.int64)


def study_lengths(*, imdb: Path | None, count: int, max_length: int, scale: float, seed: int) -> Lengths:
    if imdb is not None:
        if imdb.suffix == ".npy":  # lengths saved by --save-lengths where the text was
            raw = np.load(imdb).astype(np.int64)
        else:
            progress(f"training a byte-level BPE on {imdb} and tokenizing every review")
            raw = bpe_lengths(parquet=imdb, seed=seed)
        source = f"{imdb.name} (byte-level BPE, vocab 8000)"
        rng = np.random.default_rng(seed + 1)
        train = raw[rng.permutation(len(raw))[:count]]
        test = raw[rng.permutation(len(raw))[:count]]  # IMDB test lengths follow train's closely
    else:
        raw = lognormal_lengths(count=2 * count, seed=seed)
        source = f"log-normal fit (median {ROBERTA_MEDIAN_TOKENS}, {ROBERTA_FRACTION_OVER_512:.0%} over 512)"
        train, test = raw[:count], raw[count:]
    median = float(np.median(raw))
    over = float((raw > 512).mean())

    def fit(values: np.ndarray) -> np.ndarray:
        # --quick shrinks lengths with max_length so the share of padding stays realistic.
        return np.clip(np.rint(values * scale), 4, max_length).astype(np.int64)

    return Lengths(train=fit(train), test=fit(test), source=source, median_unclipped=median, fraction_over_512=over)


def random_split(*, lengths: np.ndarray, vocab_size: int, seed: int) -> TokenizedSplit:
    """A TokenizedSplit of random token ids with the given lengths (<s> ... </s>, no pad id)."""
    rng = np.random.default_rng(seed)
    flat = rng.integers(3, vocab_size, size=int(lengths.sum()), dtype=np.int64)
    ids = np.split(flat, np.cumsum(lengths)[:-1])
    for row in ids:
        row[0], row[-1] = 0, 2
    return TokenizedSplit(input_ids=ids, labels=rng.integers(0, 2, len(lengths)), lengths=lengths)


def subset(split: TokenizedSplit, indices: np.ndarray) -> TokenizedSplit:
    return TokenizedSplit(
        input_ids=[split.input_ids[i] for i in indices], labels=split.labels[indices], lengths=split.lengths[indices]
    )


def systematic_sample(*, widths: np.ndarray, count: int) -> np.ndarray:
    """Positions of `count` batches spread evenly over the width-sorted batches, in original order."""
    count = min(count, len(widths))
    order = np.argsort(widths, kind="stable")
    picks = order[((np.arange(count) + 0.5) * len(order) / count).astype(int)]
    return np.sort(picks)


# ----------------------------------------------------------------------------- measuring


class PeakMemory:
    """Peak device memory (CUDA) or sampled RSS growth (CPU) over a `with` block."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.result = Memory(allocated_gb=None, reserved_gb=None, rss_delta_gb=None)
        self._stop = threading.Event()
        self._peak_rss = 0

    @staticmethod
    def _rss() -> int:
        try:
            return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return 0

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._peak_rss = max(self._peak_rss, self._rss())

    def __enter__(self) -> PeakMemory:
        gc.collect()
        self._baseline = self._reserved_baseline = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()  # so `reserved` is this recipe's, not the last one's
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device) / 1e9
            self._reserved_baseline = torch.cuda.memory_reserved(self.device) / 1e9
        self._start_rss = self._peak_rss = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        rss = (max(self._peak_rss, self._rss()) - self._start_rss) / 1e9 if self._start_rss else None
        gpu = peak_memory(self.device)  # as a run records it (None on CPU)
        self.result = Memory(
            allocated_gb=gpu["peak_gpu_mem_allocated_gb"],
            reserved_gb=gpu["peak_gpu_mem_reserved_gb"],
            rss_delta_gb=rss,
            baseline_gb=self._baseline,
            reserved_baseline_gb=self._reserved_baseline,
        )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_peak(*, device: torch.device) -> Peak:
    """The device's dense matmul rate: bf16 8192^3 on CUDA, fp32 2048^3 on CPU (TFLOP/s)."""
    if device.type == "cuda":
        n, dtype, repeats, name = 8192, torch.bfloat16, 10, torch.cuda.get_device_name(device)
    else:
        n, dtype, repeats, name = (
            2048,
            torch.float32,
            3,
            f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} thread(s))",
        )
    a = torch.randn(n, n, device=device, dtype=dtype)  # random, not zeros: zeros run faster
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    seconds = (time.perf_counter() - start) / repeats
    return Peak(
        device_name=name, tflops=2 * n**3 / seconds / 1e12, what=f"{n}^3 {str(dtype).removeprefix('torch.')} matmul"
    )


def train_steps(
    *, step: TrainStep, batching: TrainBatching, split: TokenizedSplit, batches: list[np.ndarray], device: torch.device
) -> None:
    """The training loop's own step (`ftcompare.train.steps.TrainStep`) over `batches`."""
    loss_sum = torch.zeros((), device=device)
    for indices in batches:
        loss_sum += step(
            batching.collate(split, indices, pad_token_id=PAD_TOKEN_ID)
        )  # no sync per step, as in training
    sync(device)


@torch.no_grad()
def reference_eval(
    *, model: torch.nn.Module, split: TokenizedSplit, batches: list[np.ndarray], max_length: int, device: torch.device
) -> None:
    """The notebook's evaluation: fixed-width batches, fp32, logits copied back per batch."""
    model.eval()
    for indices in batches:
        batch = collate(split, indices, pad_token_id=PAD_TOKEN_ID, pad_to_multiple_of=max_length)
        logits = model(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
        ).logits
        logits.float().cpu()
    model.train()


def build_reference(*, spec: RunSpec, reference: RunSpec, device: torch.device) -> TrainSetup:
    """The notebook's recipe: fp32 model (for a 4-bit base (QLoRA) fp32 compute +
    prepare_model_for_kbit_training); plain AdamW, one tensor at a time, no schedule, no clipping."""
    if spec.quantization is None:
        model = build_model(spec=spec, num_labels=2, device=device, precision=FP32)
    else:
        from peft import get_peft_model, prepare_model_for_kbit_training

        fp32_compute = dataclasses.replace(
            spec, blocks={**spec.blocks, "quantization": {**spec.quantization, "compute_dtype": "float32"}}
        )
        model = models.load_base_model(spec=fp32_compute, num_labels=2, device=device, precision=FP32)
        model = prepare_model_for_kbit_training(model)  # upcasts non-4-bit weights, gradient checkpointing on
        # (load_base_model already keeps bitsandbytes' CPU layout trainable.)
        model = get_peft_model(model, models.peft_config(spec))
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in trainable]
    learning_rate = applied_learning_rate(reference)
    optimizer = torch.optim.AdamW(params, lr=learning_rate, foreach=False, fused=False)
    model.train()
    step = TrainStep(
        model=model,
        optimizer=optimizer,
        scheduler=None,
        trainable=params,
        max_grad_norm=None,
        device=device,
        precision=FP32,
    )
    return TrainSetup(
        model=model,
        precision=FP32,
        trainable=trainable,
        optimizer=optimizer,
        scheduler=None,
        step=step,
        method=None,
        learning_rate=learning_rate,
    )


def non_embedding_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)


def useful_flops(*, lengths: np.ndarray, params: int, layers: int, hidden: int) -> float:
    ell = lengths.astype(np.float64)
    return float((6.0 * params * ell + 12.0 * layers * hidden * ell**2).sum())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sample:
    """The batches one recipe runs: its training epoch's, and the test set's as the
    evaluate job cuts them, each sampled so that lengths appear in proportion."""

    batching: TrainBatching
    reviews_per_step: float  # mean over the epoch's batches
    widths: np.ndarray  # of every batch of the epoch
    rows: np.ndarray
    picks: np.ndarray  # positions of the timed batches in the epoch
    timed: list[np.ndarray]
    warm: list[np.ndarray]  # one batch per shape to warm up (or record) before timing
    graphs: bool  # the workflow's steps are to be CUDA graphs: every shape of the epoch is warm
    eval_batch_size: int
    multiple: int  # what eval batches are padded to a multiple of
    eval_budget: int | None
    eval_timed: list[np.ndarray]
    eval_split: TokenizedSplit  # the timed eval batches' reviews


def sample_batches(
    *,
    settings: RunSpec,
    workflow: bool,
    graphs: bool,
    seed: int,
    train: TokenizedSplit,
    test: TokenizedSplit,
    steps: int,
    eval_count: int,
) -> Sample:
    """`settings`: the variant's spec, or the reference's (no eval budget, one batch shape)."""
    batching = TrainBatching.from_spec(settings)
    # Training batches: the workflow's epoch order (grouped by length); the reference's
    # are random and all one shape.
    epoch = batching.epoch(train.lengths, seed=seed, epoch=0)
    widths = np.array([batching.width(train.lengths, b) for b in epoch])
    rows = np.array([batching.rows(train.lengths, b) for b in epoch])
    picks = systematic_sample(widths=widths, count=steps)
    timed = [epoch[i] for i in picks]
    # One batch per distinct shape (a token budget varies the review count as well); with
    # CUDA graphs every shape of the epoch, since each is recorded once per run.
    warm = {(int(rows[i]), int(widths[i])): epoch[i] for i in (range(len(epoch)) if graphs else picks)}

    # Test-set evaluation as the evaluate job does it: eval_batch_size reviews within its token budget.
    eval_budget = settings.eval_max_tokens_per_batch if workflow else None
    multiple = settings.pad_to_multiple_of
    sorted_eval = eval_batches(
        test.lengths, batch_size=settings.eval_batch_size, max_tokens=eval_budget, pad_to_multiple_of=multiple
    )
    eval_widths = np.array([padded_width(test.lengths[b].max(), multiple) for b in sorted_eval])
    eval_timed = [sorted_eval[i] for i in systematic_sample(widths=eval_widths, count=eval_count)]
    return Sample(
        batching=batching,
        reviews_per_step=len(train) / len(epoch),
        widths=widths,
        rows=rows,
        picks=picks,
        timed=timed,
        warm=list(warm.values()) if workflow else timed[:1],  # the reference has one shape
        graphs=graphs,
        eval_batch_size=settings.eval_batch_size,
        multiple=multiple,
        eval_budget=eval_budget,
        eval_timed=eval_timed,
        eval_split=subset(test, np.concatenate(eval_timed)),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainTiming:
    warmup_s: float  # the warm-up steps (and graph recording)
    train_s: float  # the timed steps
    graphs_used: bool
    graph_fallback: str | None
    mfu_params: int  # non-embedding parameters of full fine-tuning (0: no MFU)


def time_training(
    setup: TrainSetup, *, label: str, sample: Sample, train: TokenizedSplit, device: torch.device, full: bool
) -> TrainTiming:
    """Warm every batch shape up as the training loop does (CUDA graphs: every shape
    recorded first), then time the sampled steps; releases the step's graphs."""
    step, batching = setup.step, sample.batching
    progress(f"{label}: warm-up over {len(sample.warm)} batch shape(s)")
    sync(device)
    started = time.perf_counter()
    step.prepare([batching.collate(train, b, pad_token_id=PAD_TOKEN_ID) for b in sample.warm])
    train_steps(step=step, batching=batching, split=train, batches=sample.warm, device=device)
    warmup_s = time.perf_counter() - started

    progress(f"{label}: timing {len(sample.timed)} training steps (up to {batching.batch_size} reviews)")
    started = time.perf_counter()
    train_steps(step=step, batching=batching, split=train, batches=sample.timed, device=device)
    train_s = time.perf_counter() - started
    timing = TrainTiming(
        warmup_s=warmup_s,
        train_s=train_s,
        graphs_used=step.use_graphs,
        graph_fallback=step.graph_failure,
        mfu_params=non_embedding_params(setup.model) if full else 0,
    )
    step.release()
    return timing


def time_evaluation(
    model: torch.nn.Module,
    *,
    label: str,
    sample: Sample,
    test: TokenizedSplit,
    workflow: bool,
    precision: Precision,
    device: torch.device,
) -> tuple[float, float, Memory]:
    """(warm-up s, timed s, memory) of evaluation: the workflow's evaluate job over the
    sampled batches, or the notebook's. The evaluate job is a process of its own: the
    model and inference, nothing of training."""

    def evaluate(batches: list) -> None:
        if workflow:
            predict_logits(
                model,
                sample.eval_split,
                batch_size=sample.eval_batch_size,
                pad_token_id=PAD_TOKEN_ID,
                pad_to_multiple_of=sample.multiple,
                device=device,
                precision=precision,
                max_tokens=sample.eval_budget,
            )
        else:
            reference_eval(model=model, split=test, batches=batches, max_length=sample.multiple, device=device)
        sync(device)

    with PeakMemory(device) as eval_memory:
        started = time.perf_counter()
        evaluate(sample.eval_timed[:1])
        warmup_s = time.perf_counter() - started
        progress(f"{label}: timing {len(sample.eval_timed)} eval batches (batch {sample.eval_batch_size})")
        started = time.perf_counter()
        evaluate(sample.eval_timed)
        eval_s = time.perf_counter() - started
    # The evaluate job holds the model too, which the baseline above already counted.
    model_gb = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()) if t.is_cuda) / 1e9
    result = eval_memory.result
    if result.baseline_gb is not None:
        result = dataclasses.replace(
            result,
            baseline_gb=result.baseline_gb - model_gb,
            reserved_baseline_gb=result.reserved_baseline_gb - model_gb,
        )
    return warmup_s, eval_s, result


def run_recipe(
    *,
    recipe: str,
    spec: RunSpec,
    reference: RunSpec,
    device: torch.device,
    train: TokenizedSplit,
    test: TokenizedSplit,
    steps: int,
    eval_count: int,
    model_config: Any,
    peak: Peak,
) -> RecipeResult:
    """Build the model of one (strategy, recipe), warm every batch shape up, time training and eval.
    `recipe` is "reference" (the notebook's settings in `reference`, from
    config/reference-recipe.yaml) or the name of a workflow variant (its settings in `spec`),
    set up as a run of the workflow is (`steps.setup_training`)."""
    workflow = recipe != "reference"
    graphs = workflow and spec.cuda_graphs and device.type == "cuda"
    sample = sample_batches(
        settings=spec if workflow else reference,
        workflow=workflow,
        graphs=graphs,
        seed=spec.seed,
        train=train,
        test=test,
        steps=steps,
        eval_count=eval_count,
    )
    label = f"{spec.strategy}/{recipe}"
    with PeakMemory(device) as memory:
        if workflow:
            setup = setup_training(
                spec,
                num_labels=2,
                device=device,
                total_steps=math.ceil(STUDY_TRAIN_REVIEWS / sample.reviews_per_step) * spec.epochs,
                reviews_per_step=sample.reviews_per_step,
            )
        else:
            setup = build_reference(spec=spec, reference=reference, device=device)
        model, precision = setup.model, setup.precision
        counts = count_parameters(model)
        timing = time_training(
            setup, label=label, sample=sample, train=train, device=device, full=spec.method == "full"
        )
        del setup  # the optimizer's state with it: what the evaluate job does not hold
    eval_warmup_s, eval_s, eval_memory = time_evaluation(
        model, label=label, sample=sample, test=test, workflow=workflow, precision=precision, device=device
    )
    del model
    return recipe_result(
        recipe=recipe,
        spec=spec,
        workflow=workflow,
        precision=precision,
        device=device,
        sample=sample,
        train=train,
        timing=timing,
        counts=counts,
        eval_warmup_s=eval_warmup_s,
        eval_s=eval_s,
        memory=memory.result,
        eval_memory=eval_memory,
        model_config=model_config,
        peak=peak,
    )


def recipe_result(
    *,
    recipe: str,
    spec: RunSpec,
    workflow: bool,
    precision: Precision,
    device: torch.device,
    sample: Sample,
    train: TokenizedSplit,
    timing: TrainTiming,
    counts: tuple[int, int],
    eval_warmup_s: float,
    eval_s: float,
    memory: Memory,
    eval_memory: Memory,
    model_config: Any,
    peak: Peak,
) -> RecipeResult:
    """The numbers of one recipe, projected to the study's size."""
    batching, train_s = sample.batching, timing.train_s
    timed_idx = np.concatenate(sample.timed)
    real = int(train.lengths[timed_idx].sum())
    padded = int(sum(sample.rows[i] * sample.widths[i] for i in sample.picks))
    eval_reviews = len(sample.eval_split)
    eval_tokens = int(sample.eval_split.lengths.sum())
    # What recording graphs (or compiling) costs once per run, beyond the steps' own time.
    setup_s = (
        max(0.0, timing.warmup_s - len(sample.warm) * train_s / len(sample.timed))
        if (sample.graphs or spec.compile) and workflow
        else 0.0
    )
    mfu = None
    if timing.mfu_params:
        flops = useful_flops(
            lengths=train.lengths[timed_idx],
            params=timing.mfu_params,
            layers=model_config.num_hidden_layers,
            hidden=model_config.hidden_size,
        )
        mfu = flops / train_s / (peak.tflops * 1e12)
    padding = f"all to {sample.multiple}"
    if workflow:
        padding = (
            f"buckets of {batching.bucket_width}"
            if batching.bucket_width
            else f"multiple of {sample.multiple}, length-grouped"
        )
    return RecipeResult(
        strategy=spec.strategy,
        recipe=recipe,
        precision=precision.name + (f" base {str(precision.base_dtype).removeprefix('torch.')}" if workflow else ""),
        batch_size=batching.batch_size,
        max_tokens=batching.max_tokens,
        reviews_per_step=sample.reviews_per_step,
        eval_batch_size=sample.eval_batch_size,
        padding=padding,
        optimizer=("AdamW fused" if device.type == "cuda" else "AdamW") if workflow else "AdamW foreach=False",
        compiled=bool(workflow and spec.compile),
        cuda_graphs=timing.graphs_used,
        graph_fallback=timing.graph_fallback,
        setup_s=setup_s,
        # The reference's QLoRA gets it from prepare_model_for_kbit_training.
        gradient_checkpointing=spec.gradient_checkpointing if workflow else spec.method == "qlora",
        trainable_params=counts[0],
        total_params=counts[1],
        warmup_s=timing.warmup_s + eval_warmup_s,
        train_steps=len(sample.timed),
        train_reviews=len(timed_idx),
        train_real_tokens=real,
        train_padded_tokens=padded,
        train_s=train_s,
        eval_batches=len(sample.eval_timed),
        eval_reviews=eval_reviews,
        eval_real_tokens=eval_tokens,
        eval_s=eval_s,
        tokens_per_s=real / train_s,
        eval_tokens_per_s=eval_tokens / eval_s,
        projected_train_s=train_s / len(timed_idx) * STUDY_TRAIN_REVIEWS * spec.epochs,
        projected_eval_s=eval_s / eval_reviews * STUDY_TEST_REVIEWS,
        memory=memory,
        eval_memory=eval_memory,
        mfu=mfu,
    )


# ----------------------------------------------------------------------------- output


def versions() -> dict[str, str | None]:
    installed = package_versions()  # what the workflow's run records carry too
    return {
        "python": platform.python_version(),
        **{name: installed[name] for name in ("torch", "transformers", "peft", "bitsandbytes")},
        "cuda_allocator": allocator_setting() or "default",
    }


def _gb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def format_table(results: list[StrategyResult], *, device: torch.device) -> str:
    header = (
        f"{'strategy':<8} {'recipe':<12} {'precision':<16} {'rev/step':>8} {'budget':>6} {'graphs':>6} "
        f"{'tokens/s':>10} {'train s':>9} {'eval s':>7} {'setup s':>7} "
        f"{'train GB alloc/res' if device.type == 'cuda' else 'train RSS +GB':>18} "
        f"{'eval GB alloc/res' if device.type == 'cuda' else 'eval RSS +GB':>17} {'MFU':>6} {'speed-up':>8}"
        + ("\n(peak GB over what this process held before the recipe began)" if device.type == "cuda" else "")
    )
    lines = [header, "-" * len(header)]
    for item in results:
        if item.skipped:
            lines.append(f"{item.strategy:<8} skipped: {item.skipped}")
            continue
        for result in (item.reference, *item.variants.values()):
            memory, eval_memory = (
                "/".join(_gb(v) for v in m.own()) if device.type == "cuda" else _gb(m.rss_delta_gb)
                for m in (result.memory, result.eval_memory)
            )
            speedup = item.reference.projected_s / result.projected_s
            mfu = "" if result.mfu is None else f"{100 * result.mfu:.1f}%"
            graphs = "yes" if result.cuda_graphs else ("FAIL" if result.graph_fallback else "-")
            lines.append(
                f"{item.strategy:<8} {result.recipe:<12} {result.precision:<16} {result.reviews_per_step:>8.1f} "
                f"{result.max_tokens or '-':>6} {graphs:>6} "
                f"{result.tokens_per_s:>10,.0f} {result.projected_train_s:>9,.0f} {result.projected_eval_s:>7,.0f} "
                f"{result.setup_s:>7.1f} {memory:>18} {eval_memory:>17} {mfu:>6} {speedup:>7.2f}x"
            )
    return "\n".join(lines)


def print_variant_totals(totals: dict[str, tuple[float, float]]) -> None:
    print(f"{'variant':<14} {'study s':>8} {'speed-up':>8}")
    for name, (study_s, reference_s) in totals.items():
        print(f"{name:<14} {study_s:>8.1f} {reference_s / study_s if study_s else float('nan'):>7.2f}x")


def study_totals(results: list[StrategyResult], variant: str) -> tuple[float, float]:
    """(projected study seconds of `variant`, reference seconds) over the strategies that ran."""
    done = [r for r in results if not r.skipped]
    return sum(r.variants[variant].projected_s for r in done), sum(r.reference.projected_s for r in done)


NOT_GIVEN = object()


def _budget(text: str) -> int | None:
    if text.lower() in ("none", "null"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--max-tokens {text!r}: give a whole number of tokens or 'none'") from None
    return value


# Workflow settings a --variant may change, and how each is read from text.
VARIANT_KEYS: dict[str, Any] = {
    "cuda_graphs": lambda text: {"true": True, "false": False}[text.lower()],
    "bucket_width": _budget,
    "max_tokens_per_batch": _budget,
    "eval_max_tokens_per_batch": _budget,
    "batch_size": int,
    "compile": lambda text: {"true": True, "false": False}[text.lower()],
    "gradient_checkpointing": lambda text: {"true": True, "false": False}[text.lower()],
}


def _variant(text: str) -> tuple[str, dict[str, Any]]:
    """NAME or NAME:key=value,key=value (keys: VARIANT_KEYS)."""
    name, _, settings = text.partition(":")
    overrides: dict[str, Any] = {}
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        if key not in VARIANT_KEYS:
            raise argparse.ArgumentTypeError(
                f"--variant {text!r}: unknown key {key!r}; allowed: {sorted(VARIANT_KEYS)}"
            )
        try:
            overrides[key] = VARIANT_KEYS[key](value)
        except (KeyError, ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"--variant {text!r}: {key}={value!r} is not a valid value") from None
    if not name or name == "reference":
        raise argparse.ArgumentTypeError(f"--variant {text!r}: give it a name other than 'reference'")
    return name, overrides


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small model, max_length 128, few steps: a CPU smoke run")
    parser.add_argument("--strategies", nargs="+", help="strategies of the config to measure (default: all of them)")
    parser.add_argument(
        "--imdb",
        type=Path,
        help="Parquet with a `text` column: real lengths via a byte-level BPE "
        "(or the .npy that --save-lengths wrote from one)",
    )
    parser.add_argument(
        "--save-lengths",
        type=Path,
        metavar="FILE.npy",
        help="only tokenize --imdb and save its lengths here (to carry 20 kB instead of the text)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        action="append",
        default=[],
        metavar="OVERLAY",
        help="a config file layered over config/config.yaml, as --configfile is (repeatable)",
    )
    parser.add_argument("--batch-size", type=int, help="workflow training batch size (default: the config's)")
    parser.add_argument(
        "--max-tokens",
        type=_budget,
        metavar="N|none",
        default=NOT_GIVEN,
        help="workflow padded tokens per training batch (default: the config's max_tokens_per_batch)",
    )
    parser.add_argument("--eval-batch-size", type=int, help="workflow eval batch size (default: the config's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the workflow model (dynamic=True)")
    parser.add_argument(
        "--variant",
        type=_variant,
        action="append",
        metavar="NAME[:key=value,...]",
        help="a workflow variant to measure beside the reference (repeatable; the first one's totals "
        f"are the last two lines); keys: {', '.join(VARIANT_KEYS)}. Default: the config as it is",
    )
    parser.add_argument("--train-steps", type=int, help="timed workflow training steps (default 60; quick 6)")
    parser.add_argument("--ref-steps", type=int, help="timed reference training steps (default 20; quick 3)")
    parser.add_argument("--eval-batches", type=int, help="timed workflow eval batches (default 8; quick 2)")
    parser.add_argument("--ref-eval-batches", type=int, help="timed reference eval batches (default 16; quick 2)")
    parser.add_argument(
        "--reviews", type=int, help="reviews per split (default 25,000, at most the rows of --imdb; quick 2,000)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every number here")
    return parser.parse_args(argv)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Bench:
    """What every recipe of one invocation shares: its settings, the lengths, the device."""

    args: argparse.Namespace
    config: dict[str, Any]
    reference_config: dict[str, Any]  # the notebook's settings
    variants: list[tuple[str, dict[str, Any]]]
    max_length: int
    steps: int  # timed workflow training steps
    ref_steps: int
    eval_count: int  # timed workflow eval batches
    ref_eval_count: int
    lengths: Lengths
    peak: Peak
    device: torch.device

    @classmethod
    def of(cls, args: argparse.Namespace, *, device: torch.device) -> Bench:
        quick = args.quick
        config = checked_config(load_config(*args.config))
        # The notebook's settings: the same overlay a user layers to rerun its recipe.
        reference_config = checked_config(load_config(*args.config, REFERENCE_RECIPE))
        missing = [s for s in args.strategies or [] if s not in config["strategies"]]
        if missing:
            raise SystemExit(f"strategies {missing} are not in the config")
        max_length = 128 if quick else int(config["training"]["max_length"])
        lengths = study_lengths(
            imdb=args.imdb,
            count=args.reviews or (2_000 if quick else STUDY_TRAIN_REVIEWS),
            max_length=max_length,
            scale=max_length / 512 if quick else 1.0,
            seed=args.seed,
        )
        progress(
            f"lengths: {lengths.source}: median {lengths.median_unclipped:.0f} tokens, "
            f"{lengths.fraction_over_512:.1%} over 512 (roberta-base on IMDB: ~{ROBERTA_MEDIAN_TOKENS}, "
            f"~{ROBERTA_FRACTION_OVER_512:.0%}); clipped to {max_length}, mean {lengths.train.mean():.0f}"
        )
        peak = measure_peak(device=device)
        progress(f"peak: {peak.device_name}: {peak.tflops:.1f} TFLOP/s ({peak.what})")
        return cls(
            args=args,
            config=config,
            reference_config=reference_config,
            variants=args.variant or [("workflow", {})],
            max_length=max_length,
            steps=args.train_steps or (6 if quick else 60),
            ref_steps=args.ref_steps or (3 if quick else 20),
            eval_count=args.eval_batches or (2 if quick else 8),
            ref_eval_count=args.ref_eval_batches or (2 if quick else 16),
            lengths=lengths,
            peak=peak,
            device=device,
        )


def bench_spec(bench: Bench, strategy: str, *, directory: str) -> RunSpec:
    """The strategy's run as the config resolves it, on the random model in `directory`,
    with the command line's changes."""
    args, max_length = bench.args, bench.max_length
    spec = resolve_run(bench.config, strategy=strategy, seed=args.seed)
    overrides: dict[str, Any] = {"model_name_or_path": directory, "max_length": max_length, "compile": args.compile}
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.max_tokens is not NOT_GIVEN:
        widest = padded_width(max_length, spec.pad_to_multiple_of)
        if args.max_tokens is not None and args.max_tokens < widest:
            raise SystemExit(
                f"--max-tokens {args.max_tokens} cannot hold one review of {max_length} tokens "
                f"({widest} padded): use at least {widest}, or 'none'"
            )
        overrides["max_tokens_per_batch"] = args.max_tokens
    elif args.quick and spec.max_tokens_per_batch:
        # Scaled with the lengths, so the budget binds as often as at full size.
        overrides["max_tokens_per_batch"] = max(round(spec.max_tokens_per_batch * max_length / 512), max_length)
    if args.eval_batch_size:
        overrides["eval_batch_size"] = args.eval_batch_size
    return dataclasses.replace(spec, **overrides)


def measure_strategy(bench: Bench, spec: RunSpec, **data: Any) -> StrategyResult:
    """The reference recipe and every variant of one strategy; `data`: run_recipe's
    train, test and model_config."""
    common = {**data, "device": bench.device, "peak": bench.peak}
    # bitsandbytes' CPU backend is very slow: QLoRA on a CPU gets a token number of steps.
    slow = spec.quantization is not None and bench.device.type == "cpu"
    try:
        # Padded to max_length, whatever it is here (--quick uses 128).
        ref_spec = dataclasses.replace(
            resolve_run(bench.reference_config, strategy=spec.strategy, seed=spec.seed),
            max_length=bench.max_length,
            pad_to_multiple_of=bench.max_length,
        )
        reference = run_recipe(
            recipe="reference",
            spec=spec,
            reference=ref_spec,
            steps=1 if slow else bench.ref_steps,
            eval_count=1 if slow else bench.ref_eval_count,
            **common,
        )
        measured = {}
        for name, settings in bench.variants:
            measured[name] = run_recipe(
                recipe=name,
                spec=variant_spec(spec, settings, config=bench.config),
                reference=ref_spec,
                steps=1 if slow else bench.steps,
                eval_count=1 if slow else bench.eval_count,
                **common,
            )
        return StrategyResult(strategy=spec.strategy, reference=reference, variants=measured)
    except StrategyUnavailable as exc:  # e.g. QLoRA without bitsandbytes
        progress(f"{spec.strategy}: skipped: {exc}")
        return StrategyResult(strategy=spec.strategy, reference=None, skipped=str(exc))
    except torch.OutOfMemoryError as exc:  # one strategy's OOM must not hide the others' numbers
        return StrategyResult(strategy=spec.strategy, reference=None, skipped=f"out of memory: {str(exc)[:200]}")


def print_results(results: list[StrategyResult], bench: Bench, *, info: dict[str, str | None], stamp: str) -> None:
    """The table and the notes under it (the totals' lines come after)."""
    done = [r for r in results if not r.skipped]
    reference_config, peak = bench.reference_config, bench.peak
    print(
        f"Projected study: {STUDY_TRAIN_REVIEWS:,} train reviews x {bench.config['training']['epochs']} epochs + "
        f"{STUDY_TEST_REVIEWS:,} test reviews per strategy; lengths: {bench.lengths.source}"
        + (" (QUICK: small model, max_length 128: not a number to quote)" if bench.args.quick else "")
    )
    print(format_table(results, device=bench.device))
    ref_training = reference_config["training"]
    rates = sorted(
        {
            f"{reference_config['strategies'][r.strategy].get('learning_rate', ref_training['learning_rate']):g}"
            for r in done
        }
    )
    print(
        f"reference ({REFERENCE_RECIPE.name}): fp32, pad to max_length, batch {ref_training['batch_size']}, "
        f"AdamW foreach=False lr {'/'.join(rates)}, eval batch {ref_training['eval_batch_size']};"
        f" variants: config/config.yaml{''.join(f' + {c}' for c in bench.args.config)} via resolve_run + "
        "setup_training, with: "
        + "; ".join(f"{name} {settings or '(as configured)'}" for name, settings in bench.variants)
        + "; train s and eval s: projected for the study; setup s: one-time cost per run (graph recording,"
        " compiling); speed-up = reference (train+eval) / recipe (train+eval+setup);"
        f" MFU (full) = (6 N_nonemb l + 12 L d l^2) per review / time / {peak.tflops:.3g} TFLOP/s ({peak.what})"
    )
    recompute = sorted(
        {f"{r.strategy} ({name})" for r in done for name, v in r.variants.items() if v.gradient_checkpointing}
        | {f"{r.strategy} (reference)" for r in done if r.reference.gradient_checkpointing}
    )
    if recompute:
        print("gradient checkpointing (activations recomputed in backward): " + ", ".join(recompute))
    fallbacks = [
        f"{r.strategy}/{name}: {v.graph_fallback}" for r in done for name, v in r.variants.items() if v.graph_fallback
    ]
    if fallbacks:
        print("CUDA graph recording failed, ran eagerly: " + "; ".join(fallbacks))
    if len(done) < len(results):
        print("left out of the totals: " + "; ".join(f"{r.strategy} ({r.skipped})" for r in results if r.skipped))
    print(f"device: {peak.device_name}; " + ", ".join(f"{k} {v}" for k, v in info.items()) + f"; {stamp}")


def json_payload(
    results: list[StrategyResult],
    bench: Bench,
    *,
    totals: dict[str, tuple[float, float]],
    info: dict[str, str | None],
    stamp: str,
) -> dict[str, Any]:
    """Every number of the run, for --json."""
    workflow_s, reference_s = totals[bench.variants[0][0]]
    lengths, peak = bench.lengths, bench.peak
    return {
        "device": peak.device_name,
        "peak_tflops": peak.tflops,
        "peak_what": peak.what,
        "versions": info,
        "date": stamp,
        "quick": bench.args.quick,
        "lengths": {
            "source": lengths.source,
            "median_unclipped": lengths.median_unclipped,
            "fraction_over_512": lengths.fraction_over_512,
            "max_length": bench.max_length,
        },
        "variants": {
            name: {
                "settings": settings,
                "study_projected_s": totals[name][0],
                "study_speedup_vs_reference": totals[name][1] / totals[name][0] if totals[name][0] else None,
            }
            for name, settings in bench.variants
        },
        "strategies": {
            r.strategy: {"skipped": r.skipped}
            if r.skipped
            else {
                "reference": dataclasses.asdict(r.reference) | {"projected_s": r.reference.projected_s},
                "workflow": dataclasses.asdict(r.workflow) | {"projected_s": r.workflow.projected_s},
                "variants": {
                    name: dataclasses.asdict(v) | {"projected_s": v.projected_s} for name, v in r.variants.items()
                },
                "speedup": r.reference.projected_s / r.workflow.projected_s,
            }
            for r in results
        },
        "study_projected_s": workflow_s,
        "reference_study_projected_s": reference_s,
        "study_speedup_vs_reference": reference_s / workflow_s if workflow_s > 0 else float("nan"),
    }


# A small vocabulary too: 50k x 256 embeddings would be most of a 4-layer model.
QUICK_SHAPE = {
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "vocab_size": 8192,
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.save_lengths:
        if args.imdb is None or args.imdb.suffix == ".npy":
            raise SystemExit("--save-lengths needs --imdb pointing at a Parquet file of reviews")
        np.save(args.save_lengths, bpe_lengths(parquet=args.imdb, seed=args.seed).astype(np.int32))
        return 0
    device = select_device()
    if args.quick and device.type == "cpu":
        # One intra-op thread: on a small shared CPU, OpenMP threads wait for each other
        # whenever one is descheduled, and a 2-core box measured 3x slower and erratic.
        torch.set_num_threads(1)
    bench = Bench.of(args, device=device)
    lengths = bench.lengths
    with tempfile.TemporaryDirectory(prefix="ftbench-") as tmp:
        progress(f"writing a random {'small' if args.quick else 'roberta-base'} model to {tmp}")
        model_config = write_random_roberta(Path(tmp), **(QUICK_SHAPE if args.quick else {}))
        train = random_split(lengths=lengths.train, vocab_size=model_config.vocab_size, seed=args.seed)
        test = random_split(lengths=lengths.test, vocab_size=model_config.vocab_size, seed=args.seed + 1)
        results = [
            measure_strategy(
                bench,
                bench_spec(bench, strategy, directory=tmp),
                train=train,
                test=test,
                model_config=model_config,
            )
            for strategy in args.strategies or list(bench.config["strategies"])
        ]

    info = versions()
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    print_results(results, bench, info=info, stamp=stamp)
    totals = {name: study_totals(results, name) for name, _ in bench.variants}
    if len(bench.variants) > 1:
        print_variant_totals(totals)
    workflow_s, reference_s = totals[bench.variants[0][0]]
    if args.json:
        payload = json_payload(results, bench, totals=totals, info=info, stamp=stamp)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"study_projected_s: {workflow_s:.1f}")
    print(f"study_speedup_vs_reference: {reference_s / workflow_s if workflow_s > 0 else float('nan'):.3f}")
    return 0 if any(not r.skipped for r in results) else 1


def variant_spec(spec: RunSpec, settings: dict[str, Any], *, config: dict[str, Any]) -> RunSpec:
    """`spec` with a variant's settings, checked by the config's own rules (shapes, budgets)."""
    training = {**config["training"], **{k: v for k, v in settings.items() if k in config["training"]}}
    training.update({k: getattr(spec, k) for k in ("max_length", "pad_to_multiple_of", "group_by_length")})
    # One strategy alone: the study's tuning grid and baseline name others, which this check is not about.
    alone = {
        **config,
        "training": training,
        "strategies": {spec.strategy: {"method": spec.method}},
        "tuning": {**config.get("tuning", {}), "enabled": False},
        "report": {**config.get("report", {}), "baseline": spec.strategy},
    }
    try:
        checked_config(alone)
    except ConfigError as exc:
        raise SystemExit(f"variant {settings}: {exc}") from None
    return dataclasses.replace(spec, **settings)


if __name__ == "__main__":
    sys.exit(main())
