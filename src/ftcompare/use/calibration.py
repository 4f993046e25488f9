"""`ftcompare calibrate`: the throughput of each model x method family of a study on this
device, measured, for ftcompare.plan.cost to plan with instead of assumed figures.

For each (model, family) the study has, one of its strategies is set up as a run is
(`steps.setup_training`: precision, the method, the optimizer, CUDA graphs where
configured) and timed over a few optimizer steps of a full batch and of a quarter of its
rows, in turn, after one untimed step per shape (the first pays for kernel selection and
allocation): the two separate each step's fixed cost from its cost per token. Then it is
evaluated over a few batches. Each time is the median of its steps. The batches are
random tokens at the study's mean length for that model (token-weighted over its cells,
capped at max_length), as many rows as the token budget holds: speed depends on the
lengths, not on the tokens. Tokens/s count real tokens, as a run's train.json does.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftcompare.plan import cost
from ftcompare.plan import estimate as planning


def _shapes(costs: cost.StudyCosts) -> dict[tuple[str, str], dict[str, Any]]:
    """Each (model, family) of the study: one strategy's run settings to time, and the
    token-weighted mean length of its cells."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for cell, cfg in costs.cells.items():
        tokens = costs.tokens(cell)
        for strategy in cfg["strategies"]:
            spec = costs.spec(cell, strategy)
            key = (spec.model_name_or_path, cost.family(spec.method, spec.quantization))
            entry = found.setdefault(key, {"spec": spec, "tokens": 0.0, "rows": 0})
            if tokens is not None:
                entry["tokens"] += tokens.train + tokens.validation + tokens.test
                entry["rows"] += tokens.rows
    return found


def _batch(rows: int, width: int, *, vocab: int, device: Any) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(5, vocab, (rows, width), generator=generator).to(device),
        "attention_mask": torch.ones(rows, width, dtype=torch.long, device=device),
        "labels": torch.randint(0, 2, (rows,), generator=generator).to(device),
    }


def _step_seconds(step: Any, batches: list[dict[str, Any]], *, steps: int, sync: Any) -> list[float]:
    """The median seconds of a step of each batch, the batches taken in turn: on a shared
    machine a burst of load then falls on all of them alike, and the median drops it."""
    for batch in batches:  # untimed: the first step of a shape pays for what later ones reuse
        step(batch)
    times: list[list[float]] = [[] for _ in batches]
    for _ in range(steps):
        for i, batch in enumerate(batches):
            sync()
            started = time.perf_counter()
            step(batch)
            sync()
            times[i].append(time.perf_counter() - started)
    return [statistics.median(t) for t in times]


def time_one(spec: Any, *, length: int, steps: int, device: Any) -> tuple[float, float, float]:
    """`spec`'s training tokens/s and seconds per step beyond its tokens, and evaluation
    tokens/s, on `device` at `length` tokens a row. A step of the full batch and one of a
    quarter of its rows, at the same width, separate the step's fixed cost from its cost
    per token."""
    import torch

    from ftcompare.model import autocast
    from ftcompare.train import setup_training

    width = max(1, min(length, spec.max_length))
    rows = spec.batch_size if spec.max_tokens_per_batch is None else max(1, spec.max_tokens_per_batch // width)
    rows = min(rows, spec.batch_size)
    few = max(1, rows // 4)
    setup = setup_training(spec, num_labels=2, device=device, total_steps=2 * steps + 2, reviews_per_step=rows)
    vocab = setup.model.config.vocab_size
    full, small = (_batch(n, width, vocab=vocab, device=device) for n in (rows, few))
    setup.step.prepare([full, small])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t_full, t_small = _step_seconds(setup.step, [full, small], steps=steps, sync=sync)
    per_token = (t_full - t_small) / ((rows - few) * width) if rows > few else 0.0
    if per_token <= 0 or per_token * rows * width > t_full:  # too noisy to separate: all per token
        per_token, step_s = t_full / (rows * width), 0.0
    else:
        step_s = t_full - per_token * rows * width
    eval_rows = max(1, min(spec.eval_batch_size, (spec.eval_max_tokens_per_batch or rows * width) // width))
    eval_batch = _batch(eval_rows, width, vocab=vocab, device=device)
    setup.model.eval()
    with torch.no_grad(), autocast(device, setup.precision):
        (seconds,) = _step_seconds(lambda b: setup.model(**b), [eval_batch], steps=steps, sync=sync)
    evaluate = eval_rows * width / seconds
    return 1.0 / per_token, step_s, evaluate


def calibrate(
    directory: str | Path = ".",
    configfiles: Sequence[str | Path] = (),
    *,
    steps: int = 5,
    output: str | Path | None = None,
    device: str = "auto",
) -> Path:
    """Time every (model, family) of the study on `device`; store the figures with the
    device's name (results/calibration.json of the study unless `output`)."""
    import torch

    from ftcompare.contract import hardware
    from ftcompare.model import select_device

    configfiles = [Path(p).resolve() for p in configfiles]
    output = None if output is None else Path(output).resolve()
    resolved, cells = planning.load_study(directory, configfiles)
    costs = cost.StudyCosts(cells, seeds=resolved["seeds"], settings=resolved["cost"])
    torch_device = select_device() if device == "auto" else torch.device(device)
    name = hardware(torch_device)["device"]
    found = []
    for (model, fam), entry in _shapes(costs).items():
        spec = entry["spec"]
        length = math.ceil(entry["tokens"] / entry["rows"]) if entry["rows"] else spec.max_length
        train, step_s, evaluate = time_one(spec, length=length, steps=steps, device=torch_device)
        print(
            f"{model}  {fam}  ({spec.strategy}, {length} tokens a row): train {train:,.0f} tokens/s + "
            f"{step_s:.3f} s a step, evaluate {evaluate:,.0f} tokens/s on {name}"
        )
        found += [
            cost.Figure(model, fam, name, "train", train, step_s),
            cost.Figure(model, fam, name, "evaluate", evaluate),
        ]
    return cost.write_calibration(output or Path("results") / cost.CALIBRATION_FILE, found).resolve()
