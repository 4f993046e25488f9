"""Do replayed CUDA-graph steps compute what eager steps compute? One line per strategy.

    python bench/graph_check.py [--steps 12] [--strategies full lora qlora ia3] [--quick]

Two copies of one model (roberta-base's shape, random weights, dropout off so that both
draw nothing random), each set up as a run is (`steps.setup_training`), train on the
same bucketed batches: one with `TrainStep`'s eager path, one recording each batch
shape as a CUDA graph and replaying it. Printed per
strategy: whether graphs were used (or why recording failed), the largest loss and
weight differences between the two, and the median time per step of each (the graph's
is close to the GPU's own time, so eager minus graph is the per-step overhead).
bf16 differences come from kernel choice alone (e.g. attention with or without a mask).
Without CUDA both copies train eagerly: a check that the script runs, nothing more.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput as tp  # noqa: E402  (sets up the allocator and the import path)
import torch  # noqa: E402
from random_roberta import NO_DROPOUT, write_random_roberta  # noqa: E402

from ftcompare.data import TrainBatching  # noqa: E402
from ftcompare.model import (
    StrategyUnavailable,  # noqa: E402
    select_device,  # noqa: E402
)
from ftcompare.plan import (  # noqa: E402
    checked_config,  # noqa: E402
    load_config,
    resolve_run,
)
from ftcompare.train import setup_training

QUICK_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128}


def train_copy(spec, *, device, split, batches, batching, graphs: bool) -> tuple[list[float], dict, list[float], dict]:
    torch.manual_seed(0)
    setup = setup_training(
        dataclasses.replace(spec, cuda_graphs=graphs),
        num_labels=2,
        device=device,
        total_steps=len(batches),
        reviews_per_step=sum(len(b) for b in batches) / len(batches),
    )
    step, trainable = setup.step, setup.trainable
    losses, times = [], []
    for indices in batches:
        batch = batching.collate(split, indices, pad_token_id=tp.PAD_TOKEN_ID)
        tp.sync(device)
        started = time.perf_counter()
        loss = step(batch)
        tp.sync(device)
        times.append(time.perf_counter() - started)
        losses.append(float(loss))
    # Each shape's first step records (graphs) or warms up (eager): time the others.
    seen, steady = set(), []
    for indices, seconds in zip(batches, times):
        shape = (batching.rows(split.lengths, indices), batching.width(split.lengths, indices))
        if shape in seen:
            steady.append(seconds)
        seen.add(shape)
    weights = {n: p.detach().float().cpu() for n, p in trainable}
    profile = kernel_profile(step, batches[-3:], batching=batching, split=split, device=device) if PROFILE else ""
    described = step.describe()
    step.release()
    return losses, weights, steady, described, profile


def kernel_profile(step, batches, *, batching, split, device) -> str:
    """GPU time per step summed over kernels, kernels per step, and the costliest kernels."""
    if device.type != "cuda":
        return ""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for indices in batches:
            step(batching.collate(split, indices, pad_token_id=tp.PAD_TOKEN_ID))
        tp.sync(device)
    rows = []
    for event in prof.key_averages():
        busy = getattr(event, "self_device_time_total", None)
        busy = getattr(event, "self_cuda_time_total", 0) if busy is None else busy
        if busy > 0:
            rows.append((busy, event.count, event.key))
    per_step = sum(r[0] for r in rows) / len(batches) / 1000
    count = sum(r[1] for r in rows) / len(batches)
    top = "; ".join(
        f"{b / len(batches) / 1000:.2f} ms x{c // len(batches)} {k[:60]}" for b, c, k in sorted(rows)[::-1][:6]
    )
    return f"GPU busy {per_step:.1f} ms/step over {count:.0f} kernels; top: {top}"


PROFILE = False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--strategies", nargs="+", help="strategies of the config (default: all of them)")
    parser.add_argument("--bucket-width", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="a small model (CPU smoke run)")
    parser.add_argument("--profile", action="store_true", help="also print each copy's kernel time per step (CUDA)")
    args = parser.parse_args()
    global PROFILE
    PROFILE = args.profile
    device = select_device()
    max_length = 128 if args.quick else 512
    lengths = tp.lognormal_lengths(count=4000, seed=0)
    lengths = tp.np.clip(lengths * max_length // 512, 4, max_length)
    rows = []
    with tempfile.TemporaryDirectory(prefix="graphcheck-") as tmp:
        # Dropout off, so that both copies draw nothing random.
        shape = {**NO_DROPOUT, **QUICK_SHAPE, "vocab_size": 1000} if args.quick else NO_DROPOUT
        model_config = write_random_roberta(Path(tmp), **shape)
        config = checked_config(load_config())
        split = tp.random_split(lengths=lengths, vocab_size=model_config.vocab_size, seed=0)
        for strategy in args.strategies or list(config["strategies"]):
            spec = resolve_run(config, strategy=strategy, seed=0)
            lora = {"lora": {**spec.blocks["lora"], "dropout": 0.0}} if "lora" in spec.blocks else {}
            spec = dataclasses.replace(
                spec,
                model_name_or_path=tmp,
                max_length=max_length,
                blocks={**spec.blocks, **lora},
                bucket_width=args.bucket_width,
                cuda_graphs=True,
                max_tokens_per_batch=8192 * max_length // 512,
            )
            batching = TrainBatching.from_spec(spec)
            # Repeat a few batches so that most steps replay a shape recorded earlier.
            epoch = batching.epoch(split.lengths, seed=0, epoch=0)
            batches = [epoch[i % 4] for i in range(args.steps)]
            try:
                eager = train_copy(spec, device=device, split=split, batches=batches, batching=batching, graphs=False)
                graph = train_copy(spec, device=device, split=split, batches=batches, batching=batching, graphs=True)
            except StrategyUnavailable as exc:
                rows.append((strategy, f"skipped: {exc}"))
                continue
            loss_diff = max(abs(a - b) for a, b in zip(eager[0], graph[0]))
            # Adam moves weights whose gradient is near zero by about the rate, whatever the
            # gradient's sign: such tensors differ by up to 100% between any two runs that
            # round differently. The norm over all weights is the meaningful number.
            worst = max(float((graph[1][n] - w).norm() / w.norm().clamp_min(1e-12)) for n, w in eager[1].items())
            difference = sum(float((graph[1][n] - w).square().sum()) for n, w in eager[1].items())
            weight_diff = (difference / sum(float(w.square().sum()) for w in eager[1].values())) ** 0.5
            described = graph[3]
            used = "yes" if described["used"] else f"NO ({described['fallback_reason']})"
            eager_ms = 1000 * statistics.median(eager[2]) if eager[2] else float("nan")
            graph_ms = 1000 * statistics.median(graph[2]) if graph[2] else float("nan")
            rows.append(
                (
                    strategy,
                    f"graphs {used}; shapes {described['shapes']}; max |loss diff| {loss_diff:.2e} "
                    f"(loss {eager[0][-1]:.4f}); relative weight diff {weight_diff:.2e} (all weights), "
                    f"{worst:.2e} (worst tensor); median step eager {eager_ms:.1f} ms, graph {graph_ms:.1f} ms",
                )
            )
            for name, copy in (("eager", eager), ("graph", graph)):
                if copy[4]:
                    rows.append(("", f"{name}: {copy[4]}"))
    print(
        f"device: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}; torch {torch.__version__}; "
        f"{args.steps} steps, buckets of {args.bucket_width}"
    )
    for strategy, text in rows:
        print(f"{strategy:<6} {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
