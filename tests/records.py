"""Train and eval records as the jobs write them, for the tests of tables, figures and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftcompare.report import load_runs

# The columns summary.csv keeps, in this order: written out, not read from ftcompare.report.tables.
REQUIRED_COLUMNS = [
    "task",
    "model",
    "strategy",
    "method",
    "seed",
    "status",
    "reason",
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "f1",
    "precision",
    "recall",
    "train_time_s",
    "eval_time_s",
    "tokens_per_s",
    "trainable_params",
    "total_params",
    "trainable_pct",
    "peak_gpu_mem_gb",
    "peak_rss_gb",
    "adapter_size_mb",
    "device",
]
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB\n(GPU 0; 79.1 GiB total capacity)"
NO_BNB = "bitsandbytes has no backend for this device"


def provenance(device: str = "NVIDIA H200") -> dict[str, Any]:
    return {
        "device": device,
        "device_type": "cpu" if device == "cpu" else "cuda",
        "torch": "2.13.0",
        "cuda": None if device == "cpu" else "12.4",
        "python": "3.11.7",
        "packages": {"transformers": "5.24.0", "peft": "0.18.1"},
        "git_commit": "abc123",
        "hostname": "node1",
        "started_at": "2025-01-01T00:00:00",
        "finished_at": "2025-01-01T01:00:00",
    }


def train_record(
    strategy: str,
    seed: int,
    *,
    status: str = "ok",
    reason: str | None = None,
    train_time: float = 100.0,
    trainable: int = 1_000_000,
    reserved: float | None = 10.0,
    metrics: dict[str, Any] | None = None,
    device: str = "NVIDIA H200",
    model: str = "/models/roberta-tiny",
    cell: tuple[str, str, str] | None = None,
) -> dict[str, Any]:
    """`cell`: (task, model, metric) as a run of a study matrix records them; None: an older record."""
    if metrics is None:
        metrics = {
            "train_time_s": train_time,
            "tokens_per_s": 5000.0,
            "train_tokens": 500_000,
            "optimizer_steps": 100,
            "best_epoch": 1,
            "best_val_accuracy": 0.9,
            "peak_gpu_mem_allocated_gb": 8.0,
            "peak_gpu_mem_reserved_gb": reserved,
            "peak_rss_gb": 3.0,
            "trainable_params": trainable,
            "total_params": 125_000_000,
            "adapter_size_mb": 4.0,
        }
    return {
        "kind": "train",
        "strategy": strategy,
        "method": strategy,
        "seed": seed,
        "status": status,
        "reason": reason,
        "config": {
            "lr": 2e-4,
            "model_name_or_path": model,
            **({} if cell is None else dict(zip(("task", "model", "metric"), cell))),
        },
        "metrics": metrics,
        "loss_curve": [
            {"step": 10, "epoch": 0.5, "loss": 0.6, "lr": 1e-4},
            {"step": 20, "epoch": 1.0, "loss": 0.3, "lr": 5e-5},
        ]
        if status == "ok"
        else [],
        "val_curve": [{"step": 20, "epoch": 1.0, "accuracy": 0.9, "loss": 0.3}] if status == "ok" else [],
        "provenance": provenance(device),
    }


def eval_record(
    strategy: str,
    seed: int,
    *,
    status: str = "ok",
    reason: str | None = None,
    accuracy: float = 0.9,
    n_test: int = 1000,
    device: str = "NVIDIA H200",
    cell: tuple[str, str] | None = None,
) -> dict[str, Any]:
    metrics = (
        {
            "accuracy": accuracy,
            "accuracy_ci_low": accuracy - 0.02,
            "accuracy_ci_high": accuracy + 0.02,
            "f1": accuracy - 0.001,
            "precision": accuracy,
            "recall": accuracy,
            "n_test": n_test,
            "eval_time_s": 12.0,
            "confusion_matrix": [[450, 50], [50, 450]],
            "labels": [0, 1],
        }
        if status == "ok"
        else {}
    )
    return {
        "kind": "eval",
        **({} if cell is None else {"task": cell[0], "model": cell[1]}),
        "strategy": strategy,
        "seed": seed,
        "status": status,
        "reason": reason,
        "metrics": metrics,
        "provenance": provenance(device),
    }


def write_records(root: Path, pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> tuple[list[Path], list[Path]]:
    """Write each (train, eval) pair as <root>/<strategy>/seed<seed>/{train,eval}.json."""
    train_paths, eval_paths = [], []
    for train, ev in pairs:
        folder = root / train["strategy"] / f"seed{train['seed']}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train.json").write_text(json.dumps(train))
        (folder / "eval.json").write_text(json.dumps(ev))
        train_paths.append(folder / "train.json")
        eval_paths.append(folder / "eval.json")
    return train_paths, eval_paths


def mixed_runs(root: Path):
    """lora and full with two ok seeds each (lora first, as in a config), qlora skipped, ia3 failed."""
    pairs = [
        (train_record("lora", 1, train_time=110.0, trainable=890_000), eval_record("lora", 1, accuracy=0.93)),
        (train_record("lora", 0, train_time=90.0, trainable=890_000), eval_record("lora", 0, accuracy=0.91)),
        (
            train_record("full", 0, train_time=300.0, trainable=124_647_170, reserved=None),
            eval_record("full", 0, accuracy=0.95),
        ),
        (
            train_record("full", 1, train_time=340.0, trainable=124_647_170, reserved=None),
            eval_record("full", 1, accuracy=0.94),
        ),
        (
            train_record("qlora", 0, status="skipped", reason=NO_BNB, metrics={}),
            eval_record("qlora", 0, status="skipped", reason="training was skipped"),
        ),
        (
            train_record("ia3", 0, status="failed", reason=OOM, metrics={"train_time_s": 5.0}),
            eval_record("ia3", 0, status="skipped", reason="training failed"),
        ),
    ]
    train_paths, eval_paths = write_records(root, pairs)
    # Eval files in a different order: pairing must go by (strategy, seed), not position.
    return load_runs(train_paths=train_paths, eval_paths=list(reversed(eval_paths)))


def all_failed_runs(root: Path):
    return load_runs(**dict(zip(("train_paths", "eval_paths"), write_records(root, all_failed_pairs()))))


def all_failed_pairs() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (
            train_record("full", 0, status="failed", reason=OOM, metrics={}),
            eval_record("full", 0, status="skipped", reason="training failed"),
        ),
        (
            train_record("lora", 0, status="failed", reason=OOM, metrics={}),
            eval_record("lora", 0, status="skipped", reason="training failed"),
        ),
    ]


# Each named method's own parameters on roberta-base (tests/methods/test_methods.py derives them).
METHOD_PARAMS = {
    "full": 124_054_272,
    "bitfit": 102_144,
    "ln_tuning": 38_400,
    "lora": 294_912,
    "qlora": 294_912,
    "dora": 313_344,
    "rslora": 294_912,
    "adalora": 442_656,
    "vera": 24_576,
    "loha": 589_824,
    "lokr": 26_112,
    "ia3": 64_512,
    "oft": 285_696,
    "prompt_tuning": 15_360,
    "prefix_tuning": 368_640,
    "p_tuning": 229_376,
}


def many_methods_runs(root: Path):
    """One ok run of every named method (config order), accuracies in no particular order,
    with the method's own and the head's parameters split as the training loop records them."""
    pairs = []
    for i, (method, own) in enumerate(METHOD_PARAMS.items()):
        record = train_record(method, 0, train_time=50.0 + 7 * i, trainable=own + 592_130)
        record["metrics"] |= {"method_params": own, "head_params": 592_130}
        pairs.append((record, eval_record(method, 0, accuracy=0.5 + ((i * 7) % 16) / 40)))
    return load_runs(**dict(zip(("train_paths", "eval_paths"), write_records(root, pairs))))


# The synthetic study across tasks: 2 tasks x 2 models x 3 strategies, one seed, 100 test
# reviews each. Per task, which reviews each strategy gets right (the first n of 100 right,
# unless said otherwise): `full` (the baseline) 90; `lora` the same 90 on sst2, and on rte
# those and 2 more (2 better, 0 worse: not significant); `bitfit` 60 of full's 90 on sst2
# (30 worse, 0 better: p = 2 * 0.5**30, a loss after Holm) and full's 90 on rte.
STUDY_TASKS = ("sst2", "rte")
STUDY_MODELS = {"roberta-base": "FacebookAI/roberta-base", "bert": "bert-base-uncased"}
STUDY_COSTS = {  # strategy: (train time, trainable params, peak reserved GPU GB)
    "full": (300.0, 125_000_000, 20.0),
    "lora": (100.0, 1_000_000, 10.0),
    "bitfit": (60.0, 100_000, 8.0),
}


def study_correct(task: str, strategy: str) -> list[bool]:
    if strategy == "lora" and task == "rte":
        return [True] * 92 + [False] * 8
    if strategy == "bitfit" and task == "sst2":
        return [True] * 60 + [False] * 40
    return [True] * 90 + [False] * 10


def write_study(root: Path, *, baseline_fails: bool = False):
    """Records and predictions of the synthetic study; returns (train, eval, prediction) paths.
    `baseline_fails`: `full` fails on every cell (nothing can be compared)."""
    import pandas as pd

    train_paths, eval_paths, prediction_paths = [], [], []
    for model, name_or_path in STUDY_MODELS.items():
        for task in STUDY_TASKS:
            pairs = []
            for strategy, (time, trainable, reserved) in STUDY_COSTS.items():
                correct = study_correct(task, strategy)
                if baseline_fails and strategy == "full":
                    pairs.append(
                        (
                            train_record(
                                strategy,
                                0,
                                status="failed",
                                reason=OOM,
                                metrics={},
                                model=name_or_path,
                                cell=(task, model, "accuracy"),
                            ),
                            eval_record(strategy, 0, status="skipped", reason="training failed", cell=(task, model)),
                        )
                    )
                    continue
                pairs.append(
                    (
                        train_record(
                            strategy,
                            0,
                            train_time=time,
                            trainable=trainable,
                            reserved=reserved,
                            model=name_or_path,
                            cell=(task, model, "accuracy"),
                        ),
                        eval_record(strategy, 0, accuracy=sum(correct) / 100, n_test=100, cell=(task, model)),
                    )
                )
            trains, evals = write_records(root / task / model, pairs)
            for path in evals:
                record = json.loads(path.read_text())
                correct = study_correct(task, record["strategy"]) if record["status"] == "ok" else []
                # Balanced labels: a run right on 60 of 100 learned, one class for all would not.
                labels = [i % 2 for i in range(len(correct))]
                frame = pd.DataFrame(
                    {
                        "row": range(len(correct)),
                        "label": labels,
                        "prediction": [y if c else 1 - y for y, c in zip(labels, correct)],
                    }
                ).astype("int64")
                prediction_paths.append(path.parent / "predictions.parquet")
                frame.to_parquet(prediction_paths[-1])
            train_paths += trains
            eval_paths += evals
    return train_paths, eval_paths, prediction_paths


def write_cells(root: Path, cells: dict[tuple[str, str, str], dict[str, Any]], *, seeds: int = 1):
    """Records and predictions of a constructed study: `cells` maps (task, model, metric) to
    {strategy: (labels, predictions)} (arrays of the test rows; `predictions` may be a list,
    one array per seed), each strategy at STUDY_COSTS' cost. Returns (train, eval, prediction)
    paths, as write_study."""
    import numpy as np
    import pandas as pd

    from ftcompare.contract import all_scores

    train_paths, eval_paths, prediction_paths = [], [], []
    for (task, model, metric), strategies in cells.items():
        pairs, frames = [], []
        for strategy, (labels, predicted) in strategies.items():
            per_seed = predicted if isinstance(predicted, list) else [predicted] * seeds
            time, trainable, reserved = STUDY_COSTS.get(strategy, (100.0, 1_000_000, 10.0))
            for seed, predictions in enumerate(per_seed):
                labels, predictions = np.asarray(labels), np.asarray(predictions)
                num_labels = int(max(labels.max(), predictions.max())) + 1
                train = train_record(
                    strategy, seed, train_time=time, trainable=trainable, reserved=reserved, cell=(task, model, metric)
                )
                ev = eval_record(strategy, seed, n_test=len(labels), cell=(task, model))
                ev["metrics"] |= all_scores(labels, predictions, num_labels=max(num_labels, 2))
                accuracy = ev["metrics"]["accuracy"]
                ev["metrics"] |= {
                    "accuracy_ci_low": max(0, accuracy - 0.02),
                    "accuracy_ci_high": min(1, accuracy + 0.02),
                }
                train["format_version"] = ev["format_version"] = 2
                pairs.append((train, ev))
                frames.append(pd.DataFrame({"row": range(len(labels)), "label": labels, "prediction": predictions}))
        trains, evals = write_records(root / task / model, pairs)
        for path, frame in zip(evals, frames):
            prediction_paths.append(path.parent / "predictions.parquet")
            frame.astype("int64").to_parquet(prediction_paths[-1])
        train_paths += trains
        eval_paths += evals
    return train_paths, eval_paths, prediction_paths


def right_on(labels, share: float, rng):
    """Binary predictions right on `share` of the rows (at random positions)."""
    import numpy as np

    wrong = rng.random(len(labels)) >= share
    return np.where(wrong, 1 - labels, labels)


def all_majority_study(root: Path, units: dict[str, str] | None = None):
    """sst2, where every strategy learned; agnews (4 classes, macro-F1), where every run labels
    every row with the majority class, as the issue's one-epoch study did."""
    import numpy as np

    from ftcompare.report import StudyResults

    rng = np.random.default_rng(11)
    sst2 = np.tile([0, 1], 150)
    agnews = np.repeat([0, 1, 2, 3], [120, 60, 60, 60])
    shares = {"full": 0.92, "lora": 0.90, "bitfit": 0.80}
    paths = write_cells(
        root,
        {
            ("sst2", "roberta-base", "accuracy"): {
                s: (sst2, right_on(sst2, share, rng)) for s, share in shares.items()
            },
            ("agnews", "roberta-base", "macro_f1"): {s: (agnews, np.zeros(300, dtype=int)) for s in shares},
        },
    )
    return StudyResults.load(
        **dict(zip(("train_paths", "eval_paths", "prediction_paths"), paths)), baseline="full", units=units
    )
