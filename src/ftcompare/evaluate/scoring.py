"""Evaluate a fine-tuned run on the test split: metrics with uncertainty, and predictions."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ftcompare.contract import Status, all_scores, confusion, macro_precision_recall
from ftcompare.data import TokenizedData, TokenizedSplit, load_tokenized
from ftcompare.methods import RunSpec
from ftcompare.model import (
    NonFiniteLogits,
    NotMergeable,
    check_finite,
    fit_text_budget,
    latency_sample,
    load_merged,
    load_trained,
    predict_logits,
    resolve_precision,
    review_latencies,
    select_device,
)

log = logging.getLogger(__name__)

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, trials: int, *, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion: honest near 0 and 1, unlike the
    normal approximation, and what a test-set accuracy's uncertainty is."""
    if trials <= 0:
        raise ValueError(f"trials must be positive, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be within 0..{trials}, got {successes}")
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def classification_metrics(*, labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> dict[str, Any]:
    """Every metric the task has (ftcompare.contract.metrics: accuracy, macro_f1, mcc, and f1 of the
    positive class where binary), accuracy's Wilson interval, the macro precision and
    recall, and the confusion matrix."""
    correct = int((labels == predictions).sum())
    low, high = wilson_interval(correct, len(labels))
    matrix = confusion(labels, predictions, num_labels=num_labels)
    precision, recall = macro_precision_recall(matrix)
    scores = all_scores(labels, predictions, num_labels=num_labels)
    return {
        "accuracy": correct / len(labels),
        "accuracy_ci_low": low,
        "accuracy_ci_high": high,
        **{metric: value for metric, value in scores.items() if metric != "accuracy"},
        "precision": float(precision),
        "recall": float(recall),
        "n_test": int(len(labels)),
        "labels": list(range(num_labels)),
        "confusion_matrix": matrix.tolist(),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@dataclasses.dataclass(kw_only=True)
class EvalResult:
    status: Status
    reason: str | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    predictions: pd.DataFrame | None = None
    device: torch.device | None = None


def predictions_frame(*, labels: np.ndarray, logits: np.ndarray) -> pd.DataFrame:
    probabilities = softmax(logits)
    frame = pd.DataFrame({"row": np.arange(len(labels)), "label": labels, "prediction": logits.argmax(axis=1)})
    for k in range(probabilities.shape[1]):
        frame[f"prob_{k}"] = probabilities[:, k]
    return frame


def evaluate_run(
    *,
    spec: RunSpec,
    tokenized_dir: Path,
    model_dir: Path,
    device: torch.device | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Test-set metrics of the model saved in `model_dir` (rebuilt the way it was trained),
    and what it costs to run: test throughput at eval_batch_size and single-review latency,
    for the adapter as trained and, where it can be merged into its base, merged.
    `on_batch(done, total)`: progress through the test split's batches (ftcompare.train.progress)."""
    device = device or select_device()
    try:
        precision = resolve_precision(requested=spec.precision, method=spec.method, device=device)
        data = load_tokenized(tokenized_dir, splits=("test",))
        test = data.splits["test"]
        test = fit_text_budget(test, spec)  # as in training: virtual tokens take the rest
        model = load_trained(
            spec=spec, model_dir=model_dir, num_labels=data.num_labels, device=device, precision=precision
        )
        logits, eval_time, latencies = _measure(
            model, test, spec=spec, data=data, device=device, precision=precision, on_batch=on_batch
        )
    except Exception as exc:  # failure isolation, as in training
        log.exception("evaluation of %s/seed%d failed", spec.strategy, spec.seed)
        return EvalResult(status=Status.FAILED, reason=f"{type(exc).__name__}: {exc}"[:2000], device=device)
    try:
        check_finite(logits, what="test reviews")
    except NonFiniteLogits as exc:
        log.error("evaluation of %s/seed%d failed: %s", spec.strategy, spec.seed, exc)
        return EvalResult(status=Status.FAILED, reason=str(exc), device=device)
    metrics = classification_metrics(labels=test.labels, predictions=logits.argmax(axis=1), num_labels=data.num_labels)
    metrics["eval_time_s"] = eval_time
    metrics["eval_reviews_per_s"] = len(test) / eval_time  # inference throughput at eval_batch_size
    metrics["eval_tokens_per_s"] = float(test.lengths.sum()) / eval_time
    metrics |= latency_metrics(latencies)
    log.info(
        "test accuracy %.4f [%.4f, %.4f] macro-F1 %.4f MCC %.4f in %.1f s; one review: p50 %.1f ms, p95 %.1f ms",
        metrics["accuracy"],
        metrics["accuracy_ci_low"],
        metrics["accuracy_ci_high"],
        metrics["macro_f1"],
        metrics["mcc"],
        eval_time,
        metrics["latency_p50_ms"],
        metrics["latency_p95_ms"],
    )
    del model  # before a merged copy is loaded: one model on the device at a time
    if device.type == "cuda":
        torch.cuda.empty_cache()
    metrics |= _merged_metrics(
        spec=spec, model_dir=model_dir, data=data, device=device, precision=precision, logits=logits
    )
    return EvalResult(
        status=Status.OK,
        metrics=metrics,
        predictions=predictions_frame(labels=test.labels, logits=logits),
        device=device,
    )


def _measure(
    model: torch.nn.Module,
    test: TokenizedSplit,
    *,
    spec: RunSpec,
    data: TokenizedData,
    device,
    precision,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, float, np.ndarray]:
    """The test split's logits, the seconds they took, and single-review latencies (seconds)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    logits = predict_logits(
        model,
        test,
        batch_size=spec.eval_batch_size,
        max_tokens=spec.eval_max_tokens_per_batch,
        pad_token_id=data.pad_token_id,
        pad_to_multiple_of=spec.pad_to_multiple_of,
        device=device,
        precision=precision,
        on_batch=on_batch,
    )  # (predict_logits copies to the host at the end, so the clock is honest)
    eval_time = time.perf_counter() - started
    latencies = review_latencies(
        model,
        test,
        latency_sample(len(test)),
        pad_token_id=data.pad_token_id,
        pad_to_multiple_of=spec.pad_to_multiple_of,
        device=device,
        precision=precision,
    )
    return logits, eval_time, latencies


def latency_metrics(seconds: np.ndarray, prefix: str = "") -> dict[str, Any]:
    p50, p95 = np.percentile(seconds, [50, 95]) * 1000
    return {
        f"{prefix}latency_p50_ms": float(p50),
        f"{prefix}latency_p95_ms": float(p95),
        "latency_reviews": len(seconds),
    }


def _merged_metrics(
    *, spec: RunSpec, model_dir: Path, data: TokenizedData, device, precision, logits: np.ndarray
) -> dict[str, Any]:
    """Throughput and latency of the adapter merged into its base (model.build.load_merged),
    and how closely its test predictions follow the adapter's. Nothing for a method that
    cannot merge; a merge that fails is recorded (merged_error) without failing the run,
    whose results are the adapter's."""
    test = data.splits["test"]
    try:
        merged = load_merged(
            spec=spec, model_dir=model_dir, num_labels=data.num_labels, device=device, precision=precision
        )
        merged_logits, merged_time, latencies = _measure(
            merged, test, spec=spec, data=data, device=device, precision=precision
        )
    except NotMergeable:
        return {}
    except Exception as exc:
        log.warning("merging %s/seed%d failed: %s", spec.strategy, spec.seed, exc, exc_info=True)
        return {"merged_error": f"{type(exc).__name__}: {exc}"[:2000]}
    metrics = {
        "merged_eval_reviews_per_s": len(test) / merged_time,
        **latency_metrics(latencies, prefix="merged_"),
        # The share of test reviews the merged model labels as the adapter does, and the
        # largest difference in a class probability: float rounding, bf16's on a GPU.
        "merged_agreement": float((merged_logits.argmax(axis=1) == logits.argmax(axis=1)).mean()),
        "merged_max_prob_diff": float(np.abs(softmax(merged_logits) - softmax(logits)).max()),
    }
    log.info(
        "merged: %.0f reviews/s, one review p50 %.1f ms, p95 %.1f ms; predictions agree on %.2f%%",
        metrics["merged_eval_reviews_per_s"],
        metrics["merged_latency_p50_ms"],
        metrics["merged_latency_p95_ms"],
        100 * metrics["merged_agreement"],
    )
    return metrics
