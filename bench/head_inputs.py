"""What does a run's classification head read? For each finished run folder: the head's
input over the run's own training and validation rows, as the run started (the base
with the method's fresh weights, built from the run's seed) and as it ended, and

- `cosine`: the mean cosine between the head inputs of two different texts (1: every
  text looks the same to the head);
- `probe`: the validation accuracy of a logistic regression fitted to those inputs on
  the training rows, i.e. what a perfectly trained head could reach with the encoder
  frozen as it is.

A method that stays at chance either cannot move its loss at the rates tried, or leaves
its head an input in which the classes barely differ (high cosine, probe near chance).
The prompt methods prepend virtual tokens that every text's first token attends to,
which is where this was needed (docs/methods.md).

    python bench/head_inputs.py RUN_DIR [RUN_DIR ...] [--rows 400]

Runs on the CPU; needs scikit-learn (a dependency of the package).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))


def first_rows(split, count: int):
    """The split's first `count` rows (a prepared split is shuffled: a fair sample)."""
    keep = slice(0, count)
    pair = None if split.pair_tokens is None else split.pair_tokens[keep]
    return dataclasses.replace(
        split, input_ids=split.input_ids[keep], labels=split.labels[keep], lengths=split.lengths[keep], pair_tokens=pair
    )


def head_inputs(
    model, split, *, batch_size: int, max_tokens: int | None, pad_token_id: int, pad_to_multiple_of: int
) -> np.ndarray:
    """The classification head's input for every row of `split`, in the split's order:
    captured by a hook on the head while the workflow's own inference runs (batched as the
    run's evaluation is: `batch_size` rows and `max_tokens` padded tokens at most)."""
    import torch

    from ftcompare.data import eval_batches
    from ftcompare.model import predict_logits, resolve_precision, transformers_model

    captured: list[torch.Tensor] = []
    head = transformers_model(model).classifier  # BERT's, RoBERTa's, DeBERTa's and ModernBERT's head
    hook = head.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach().float()))
    batching = {"batch_size": batch_size, "max_tokens": max_tokens, "pad_to_multiple_of": pad_to_multiple_of}
    try:
        predict_logits(
            model,
            split,
            **batching,
            pad_token_id=pad_token_id,
            device=torch.device("cpu"),
            precision=resolve_precision(requested="fp32", method="full", device=torch.device("cpu")),
        )
    finally:
        hook.remove()
    # RoBERTa's head reads the whole sequence and takes <s> itself; BERT's reads the pooled [CLS].
    features = torch.cat([batch[:, 0] if batch.ndim == 3 else batch for batch in captured]).numpy()
    # Inference batches the rows longest first: back to the split's order.
    order = np.concatenate(eval_batches(split.lengths, **batching))
    out = np.empty_like(features)
    out[order] = features
    return out


def describe(train: np.ndarray, train_labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    # The mean of u_i . u_j over pairs i != j, from the sum of the unit vectors: |sum u|^2 - n
    # is twice the pairs' sum (no n x n matrix).
    unit = val / np.linalg.norm(val, axis=1, keepdims=True)
    n = len(unit)
    cosine = float((np.square(unit.sum(axis=0)).sum() - n) / (n * (n - 1)))
    scaler = StandardScaler().fit(train)
    probe = LogisticRegression(max_iter=5000).fit(scaler.transform(train), train_labels)
    return {"cosine": cosine, "probe": float(probe.score(scaler.transform(val), val_labels))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders (results/runs/<task>/<model>/...)")
    parser.add_argument("--rows", type=int, default=400, help="training rows the probe is fitted on (at most)")
    args = parser.parse_args()

    import torch

    from ftcompare.contract import UsageError, layout
    from ftcompare.data import load_tokenized
    from ftcompare.model import build_model, fit_text_budget, resolve_precision
    from ftcompare.train import seed_everything
    from ftcompare.use import load_for_inference, open_run

    cpu = torch.device("cpu")
    print(f"{'run':48s} {'when':8s} {'cosine':>7s} {'probe':>6s}")
    for run_dir in args.runs:
        try:
            run = open_run(run_dir)
        except UsageError as exc:
            raise SystemExit(f"head_inputs.py: {exc}") from None
        folder = layout.study_folder(run_dir)
        if folder is None:
            raise SystemExit(f"head_inputs.py: {run_dir} is not under a study's results/runs/ (no tokenized data)")
        data = load_tokenized(folder / run.train["tokenized_dir"], splits=("train", "validation"))
        spec = run.spec  # as trained: its base is the pretrained model (run_spec gives a full run's own weights)
        splits = {name: fit_text_budget(data.splits[name], spec) for name in ("train", "validation")}
        splits["train"] = first_rows(splits["train"], args.rows)
        seed_everything(spec.seed)
        precision = resolve_precision(requested="auto", method=spec.method, device=cpu)
        models = {
            "start": build_model(
                spec=spec,
                num_labels=data.num_labels,
                device=cpu,
                precision=precision,
                total_steps=run.train["metrics"]["optimizer_steps"],  # AdaLoRA's schedule
            ),
            "end": load_for_inference(run, device=cpu)[0],
        }
        batching = {
            "batch_size": spec.eval_batch_size,
            "max_tokens": spec.eval_max_tokens_per_batch,
            "pad_token_id": data.pad_token_id,
            "pad_to_multiple_of": spec.pad_to_multiple_of,
        }
        name = f"{run.train['task']}/{run.train['strategy']}/seed{run.train['seed']}"
        for when, model in models.items():
            train, val = (head_inputs(model, splits[split], **batching) for split in ("train", "validation"))
            figures = describe(train, splits["train"].labels, val, splits["validation"].labels)
            print(f"{name:48s} {when:8s} {figures['cosine']:7.3f} {figures['probe']:6.3f}", flush=True)


if __name__ == "__main__":
    main()
