"""Tests for ftcompare.report: loading, the tables, the figures and the Markdown report."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ftcompare.report import (
    DEFAULT_REFERENCE,
    FIGURE_NAMES,
    SUMMARY_COLUMNS,
    _pareto_mask,
    aggregate_by_strategy,
    load_runs,
    plot_figures,
    render_markdown,
    summary_table,
    write_report,
    write_summary_csv,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REQUIRED_COLUMNS = [
    "strategy", "method", "seed", "status", "reason", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
    "f1", "precision", "recall", "train_time_s", "eval_time_s", "tokens_per_s", "trainable_params",
    "total_params", "trainable_pct", "peak_gpu_mem_gb", "peak_rss_gb", "adapter_size_mb", "device",
]
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB\n(GPU 0; 79.1 GiB total capacity)"
NO_BNB = "bitsandbytes has no backend for this device"


def provenance(device: str = "NVIDIA H200") -> dict[str, Any]:
    return {
        "device": device, "device_type": "cpu" if device == "cpu" else "cuda", "torch": "2.13.0",
        "cuda": None if device == "cpu" else "12.4", "python": "3.11.7",
        "packages": {"transformers": "5.24.0", "peft": "0.18.1"}, "git_commit": "abc123",
        "hostname": "node1", "started_at": "2025-01-01T00:00:00", "finished_at": "2025-01-01T01:00:00",
    }


def train_record(strategy: str, seed: int, *, status: str = "ok", reason: str | None = None,
                 train_time: float = 100.0, trainable: int = 1_000_000, reserved: float | None = 10.0,
                 metrics: dict[str, Any] | None = None, device: str = "NVIDIA H200") -> dict[str, Any]:
    if metrics is None:
        metrics = {
            "train_time_s": train_time, "tokens_per_s": 5000.0, "train_tokens": 500_000, "optimizer_steps": 100,
            "best_epoch": 1, "best_val_accuracy": 0.9, "peak_gpu_mem_allocated_gb": 8.0,
            "peak_gpu_mem_reserved_gb": reserved, "peak_rss_gb": 3.0,
            "trainable_params": trainable, "total_params": 125_000_000, "adapter_size_mb": 4.0,
        }
    return {
        "kind": "train", "strategy": strategy, "method": strategy, "seed": seed, "status": status,
        "reason": reason, "config": {"lr": 2e-4, "model_name_or_path": "/models/roberta-tiny"}, "metrics": metrics,
        "loss_curve": [{"step": 10, "epoch": 0.5, "loss": 0.6, "lr": 1e-4},
                       {"step": 20, "epoch": 1.0, "loss": 0.3, "lr": 5e-5}] if status == "ok" else [],
        "val_curve": [{"step": 20, "epoch": 1.0, "accuracy": 0.9, "loss": 0.3}] if status == "ok" else [],
        "provenance": provenance(device),
    }


def eval_record(strategy: str, seed: int, *, status: str = "ok", reason: str | None = None,
                accuracy: float = 0.9, n_test: int = 1000, device: str = "NVIDIA H200") -> dict[str, Any]:
    metrics = {
        "accuracy": accuracy, "accuracy_ci_low": accuracy - 0.02, "accuracy_ci_high": accuracy + 0.02,
        "f1": accuracy - 0.001, "precision": accuracy, "recall": accuracy, "n_test": n_test,
        "eval_time_s": 12.0, "confusion_matrix": [[450, 50], [50, 450]], "labels": [0, 1],
    } if status == "ok" else {}
    return {"kind": "eval", "strategy": strategy, "seed": seed, "status": status, "reason": reason,
            "metrics": metrics, "provenance": provenance(device)}


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


@pytest.fixture()
def mixed(tmp_path: Path):
    """lora and full with two ok seeds each (lora first, as in a config), qlora skipped, ia3 failed."""
    pairs = [
        (train_record("lora", 1, train_time=110.0, trainable=890_000),
         eval_record("lora", 1, accuracy=0.93)),
        (train_record("lora", 0, train_time=90.0, trainable=890_000),
         eval_record("lora", 0, accuracy=0.91)),
        (train_record("full", 0, train_time=300.0, trainable=124_647_170, reserved=None),
         eval_record("full", 0, accuracy=0.95)),
        (train_record("full", 1, train_time=340.0, trainable=124_647_170, reserved=None),
         eval_record("full", 1, accuracy=0.94)),
        (train_record("qlora", 0, status="skipped", reason=NO_BNB, metrics={}),
         eval_record("qlora", 0, status="skipped", reason="training was skipped")),
        (train_record("ia3", 0, status="failed", reason=OOM, metrics={"train_time_s": 5.0}),
         eval_record("ia3", 0, status="skipped", reason="training failed")),
    ]
    train_paths, eval_paths = write_records(tmp_path / "runs", pairs)
    # Eval files in a different order: pairing must go by (strategy, seed), not position.
    return load_runs(train_paths=train_paths, eval_paths=list(reversed(eval_paths)))


@pytest.fixture()
def all_failed(tmp_path: Path):
    pairs = [
        (train_record("full", 0, status="failed", reason=OOM, metrics={}),
         eval_record("full", 0, status="skipped", reason="training failed")),
        (train_record("lora", 0, status="failed", reason=OOM, metrics={}),
         eval_record("lora", 0, status="skipped", reason="training failed")),
    ]
    return load_runs(**dict(zip(("train_paths", "eval_paths"), write_records(tmp_path / "runs", pairs))))


# --------------------------------------------------------------------------- loading


def test_pairing_and_status_precedence(mixed) -> None:
    keyed = {(run.strategy, run.seed): run for run in mixed}
    assert len(mixed) == 6
    assert keyed[("lora", 1)].eval["metrics"]["accuracy"] == 0.93
    assert keyed[("lora", 0)].eval["metrics"]["accuracy"] == 0.91
    # failed beats skipped, and the first non-null reason (train's) wins.
    assert keyed[("ia3", 0)].status == "failed"
    assert keyed[("ia3", 0)].reason == OOM
    assert keyed[("qlora", 0)].status == "skipped"
    assert keyed[("qlora", 0)].reason == NO_BNB
    assert keyed[("full", 0)].status == "ok" and keyed[("full", 0)].reason is None


def test_eval_failure_makes_an_ok_training_run_failed(tmp_path: Path) -> None:
    paths = write_records(tmp_path, [(train_record("lora", 0),
                                      eval_record("lora", 0, status="failed", reason="eval crashed"))])
    (run,) = load_runs(train_paths=paths[0], eval_paths=paths[1])
    assert (run.status, run.reason) == ("failed", "eval crashed")


def test_runs_keep_config_order_and_sort_seeds(mixed) -> None:
    assert [(run.strategy, run.seed) for run in mixed] == [
        ("lora", 0), ("lora", 1), ("full", 0), ("full", 1), ("qlora", 0), ("ia3", 0)]


def test_bad_status_raises_naming_it(tmp_path: Path) -> None:
    paths = write_records(tmp_path, [(train_record("lora", 0, status="crashed"), eval_record("lora", 0))])
    with pytest.raises(ValueError, match=r"'crashed'.*failed.*ok.*skipped"):
        load_runs(train_paths=paths[0], eval_paths=paths[1])


def test_swapped_kinds_and_unpaired_runs_raise(tmp_path: Path) -> None:
    train_paths, eval_paths = write_records(tmp_path, [(train_record("lora", 0), eval_record("lora", 0))])
    with pytest.raises(ValueError, match="kind 'eval'"):
        load_runs(train_paths=eval_paths, eval_paths=train_paths)
    with pytest.raises(ValueError, match="only one of train/eval"):
        load_runs(train_paths=train_paths, eval_paths=[])


# --------------------------------------------------------------------------- tables


def test_summary_columns_order_and_values(mixed) -> None:
    table = summary_table(runs=mixed)
    assert list(table.columns[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
    assert list(table.columns) == list(SUMMARY_COLUMNS)
    assert list(dict.fromkeys(table["strategy"])) == ["lora", "full", "qlora", "ia3"]
    lora0 = table[(table["strategy"] == "lora") & (table["seed"] == 0)].iloc[0]
    assert lora0["accuracy"] == pytest.approx(0.91)
    assert lora0["trainable_pct"] == pytest.approx(100 * 890_000 / 125_000_000)
    assert lora0["peak_gpu_mem_gb"] == pytest.approx(10.0)  # reserved preferred over allocated (8.0)
    full0 = table[(table["strategy"] == "full") & (table["seed"] == 0)].iloc[0]
    assert full0["peak_gpu_mem_gb"] == pytest.approx(8.0)  # no reserved figure: allocated
    assert lora0["device"] == "NVIDIA H200"


def test_missing_metrics_are_nan(mixed) -> None:
    table = summary_table(runs=mixed).set_index("strategy")
    assert math.isnan(table.loc["qlora", "accuracy"])
    assert math.isnan(table.loc["qlora", "trainable_pct"])
    assert math.isnan(table.loc["ia3", "peak_rss_gb"])
    assert table.loc["ia3", "train_time_s"] == 5.0  # partial metrics survive
    assert table.loc["ia3", "reason"] == OOM


def test_write_summary_csv_round_trips(mixed, tmp_path: Path) -> None:
    path = tmp_path / "out" / "summary.csv"
    write_summary_csv(runs=mixed, path=path)
    read = pd.read_csv(path)
    assert list(read.columns) == list(SUMMARY_COLUMNS)
    assert len(read) == 6


def test_aggregate_matches_hand_computed(mixed) -> None:
    agg = aggregate_by_strategy(table=summary_table(runs=mixed)).set_index("strategy")
    assert list(agg.index) == ["lora", "full", "qlora", "ia3"]
    assert agg.loc["lora", "accuracy_mean"] == pytest.approx(0.92)
    assert agg.loc["lora", "accuracy_std"] == pytest.approx(math.sqrt(2) * 0.01)  # ddof=1
    assert agg.loc["full", "train_time_s_mean"] == pytest.approx(320.0)
    assert agg.loc["full", "train_time_s_std"] == pytest.approx(math.sqrt(800.0))
    assert agg.loc["full", "accuracy_count"] == 2
    assert agg.loc["lora", "n_ok"] == 2
    # The failed ia3 run's partial train time must not enter the aggregate.
    assert agg.loc["ia3", "n_ok"] == 0 and agg.loc["ia3", "train_time_s_count"] == 0
    assert math.isnan(agg.loc["ia3", "train_time_s_mean"])
    # 95% CI of the mean over 2 seeds: t(1) = 12.706, half-width t * sd / sqrt(2) = 12.706 * 0.01.
    assert agg.loc["lora", "accuracy_mean_ci_high"] == pytest.approx(min(1.0, 0.92 + 12.706 * 0.01))
    assert agg.loc["lora", "accuracy_mean_ci_low"] == pytest.approx(0.92 - 12.706 * 0.01)


def test_aggregate_single_seed_uses_binomial_ci(tmp_path: Path) -> None:
    paths = write_records(tmp_path, [(train_record("lora", 0), eval_record("lora", 0, accuracy=0.9))])
    agg = aggregate_by_strategy(table=summary_table(runs=load_runs(train_paths=paths[0], eval_paths=paths[1])))
    assert agg.loc[0, "accuracy_mean_ci_low"] == pytest.approx(0.88)
    assert agg.loc[0, "accuracy_mean_ci_high"] == pytest.approx(0.92)
    assert agg.loc[0, "accuracy_ci_method"] == "binomial"


def test_pareto_mask() -> None:
    # (memory, accuracy): b dominates c (less memory, more accuracy); a and b trade off.
    mask = _pareto_mask(np.array([1.0, 2.0, 3.0, 2.0]), np.array([0.90, 0.95, 0.93, 0.95]))
    assert mask.tolist() == [True, True, False, True]


# --------------------------------------------------------------------------- figures


def assert_pngs(paths: dict[str, Path], out_dir: Path) -> None:
    assert set(paths) == set(FIGURE_NAMES)
    for name, path in paths.items():
        assert path == out_dir / f"{name}.png"
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE), name


def test_every_figure_written(mixed, tmp_path: Path) -> None:
    out_dir = tmp_path / "figures"
    assert_pngs(plot_figures(table=summary_table(runs=mixed), runs=mixed, out_dir=out_dir), out_dir)


def test_every_figure_written_when_all_failed(all_failed, tmp_path: Path) -> None:
    out_dir = tmp_path / "figures"
    assert_pngs(plot_figures(table=summary_table(runs=all_failed), runs=all_failed, out_dir=out_dir), out_dir)


# --------------------------------------------------------------------------- Markdown


def render(runs, tmp_path: Path, reference=DEFAULT_REFERENCE) -> str:
    figures = {name: tmp_path / "results" / "figures" / f"{name}.png" for name in FIGURE_NAMES}
    return render_markdown(table=summary_table(runs=runs), runs=runs, figures=figures,
                           report_path=tmp_path / "results" / "report.md", reference=reference)


def table_row(markdown: str, first_cell: str, after: str = "") -> str:
    start = markdown.index(after) if after else 0
    return next(line for line in markdown[start:].splitlines() if line.startswith(f"| {first_cell} |"))


def test_markdown_results_rows(mixed, tmp_path: Path) -> None:
    md = render(mixed, tmp_path)
    assert md.startswith("# ")
    lora = table_row(md, "lora")
    assert "92.00 ± 1.41%" in lora
    assert "91.90%" in lora  # macro F1 mean of 0.909 and 0.929
    assert "100 s" in lora and "5,000" in lora and "890,000" in lora and "0.71%" in lora
    assert "10.00" in lora and "4.00" in lora and "2/2" in lora
    full = table_row(md, "full")
    assert "94.50 ± 0.71%" in full and "320 s" in full and "124,647,170" in full
    qlora = table_row(md, "qlora")
    assert "0/1" in qlora and "—" in qlora


def test_markdown_failures_links_and_provenance(mixed, tmp_path: Path) -> None:
    md = render(mixed, tmp_path)
    failures = md[md.index("Skipped or failed"):md.index("## Hardware")]
    assert f"`qlora` seed 0: **skipped**: {NO_BNB}" in failures
    assert "`ia3` seed 0: **failed**: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0;" in failures
    assert "lora" not in failures.replace("qlora", "")
    for name in FIGURE_NAMES:
        assert f"![{name}](figures/{name}.png)" in md
    env = md[md.index("## Hardware"):]
    for text in ("NVIDIA H200", "2.13.0", "12.4", "3.11.7", "transformers: 5.24.0", "peft: 0.18.1", "abc123"):
        assert text in env


def test_markdown_reference_comparison(mixed, tmp_path: Path) -> None:
    md = render(mixed, tmp_path)
    section = md[md.index("## Comparison with the reference notebook"):]
    # ours lora 92.00% vs reference 93.26% -> -1.26 points; full 94.50% vs 94.15% -> +0.35.
    assert table_row(md, "lora", after="## Comparison") == "| lora | 93.26% | 92.00% | -1.26 | 2,307 s | 100 s |"
    assert "| full | 94.15% | 94.50% | +0.35 | 2,657 s | 320 s |" in section
    assert "| qlora | 93.88% | — | — | 4,030 s | — |" in section
    assert "95.50%" in section
    assert "not directly comparable" in section
    assert "1,000 test reviews" in section and "NVIDIA H200" in section and "RTX 3080" in section


def test_reference_caveat_absent_when_setup_matches(tmp_path: Path) -> None:
    device = "NVIDIA GeForce RTX 3080"
    paths = write_records(tmp_path, [(train_record("full", 0, device=device),
                                      eval_record("full", 0, n_test=25_000, accuracy=0.94, device=device))])
    runs = load_runs(train_paths=paths[0], eval_paths=paths[1])
    md = render(runs, tmp_path)
    assert "not directly comparable" not in md
    assert "Same test-set size" in md
    assert "None." in md[md.index("Skipped or failed"):]


def test_cpu_runs_report_host_rss(tmp_path: Path) -> None:
    metrics = {"train_time_s": 50.0, "peak_gpu_mem_allocated_gb": None, "peak_gpu_mem_reserved_gb": None,
               "peak_rss_gb": 2.5, "trainable_params": 10, "total_params": 100}
    paths = write_records(tmp_path, [(train_record("lora", 0, metrics=metrics, device="cpu"),
                                      eval_record("lora", 0, device="cpu"))])
    runs = load_runs(train_paths=paths[0], eval_paths=paths[1])
    assert math.isnan(summary_table(runs=runs).loc[0, "peak_gpu_mem_gb"])
    md = render(runs, tmp_path)
    assert "Peak host RSS (GB" in md and "| 2.50 |" in md
    assert "CUDA: none" in md
    assert "ran on cpu" in md


def test_write_report_when_all_failed(all_failed, tmp_path: Path) -> None:
    report_path = tmp_path / "results" / "report.md"
    figures = plot_figures(table=summary_table(runs=all_failed), runs=all_failed,
                           out_dir=tmp_path / "results" / "figures")
    write_report(table=summary_table(runs=all_failed), runs=all_failed, figures=figures,
                 report_path=report_path, reference=DEFAULT_REFERENCE)
    md = report_path.read_text()
    assert "0 of 2 runs succeeded" in md
    assert md.count("**failed**") == 2
    assert "no successful run of ours" in md
    assert "![accuracy](figures/accuracy.png)" in md


def test_markdown_names_the_model(mixed, tmp_path: Path) -> None:
    # A local folder is named by its last component, not its full path.
    assert "strategies of `roberta-tiny` for text classification" in render(mixed, tmp_path)


def test_markdown_training_settings(tmp_path: Path) -> None:
    def settings(strategy: str, *, recompute: bool, budget: int | None, lr: float, per_step: float) -> dict[str, Any]:
        record = train_record(strategy, 0)
        record["config"] |= {"max_tokens_per_batch": budget, "gradient_checkpointing": recompute,
                             "batch_size": 64, "epochs": 3}  # fmt: skip
        record["metrics"] |= {"precision": "bf16", "effective_learning_rate": lr, "mean_reviews_per_step": per_step}
        return record

    pairs = [
        (settings("full", recompute=False, budget=8192, lr=1.94e-5, per_step=30.04), eval_record("full", 0)),
        (settings("qlora", recompute=True, budget=None, lr=5e-4, per_step=64.0), eval_record("qlora", 0)),
        (train_record("ia3", 0, status="failed", reason=OOM, metrics={}), eval_record("ia3", 0, status="skipped")),
    ]
    runs = load_runs(**dict(zip(("train_paths", "eval_paths"), write_records(tmp_path / "runs", pairs))))
    md = render(runs, tmp_path)
    section = md[md.index("## Training settings"):md.index("## Figures")]
    assert "| full | bf16 | 1.94e-05 | 30.0 (at most 64) | 8192 | no | 3 |" in section
    assert "| qlora | bf16 | 0.0005 | 64.0 (at most 64) | none | yes | 3 |" in section
    assert "| ia3 | — | — | — | — | — | — |" in section  # a failed run without settings


def test_degenerate_run_is_flagged_in_the_summary_and_beside_its_accuracy(tmp_path: Path) -> None:
    flat = train_record("full", 1)
    flat["metrics"]["degenerate_validation"] = "all 40 validation predictions are class 1"
    pairs = [(train_record("full", 0), eval_record("full", 0, accuracy=0.9)),
             (flat, eval_record("full", 1, accuracy=0.5)),
             (train_record("lora", 0), eval_record("lora", 0, accuracy=0.8))]  # fmt: skip
    runs = load_runs(**dict(zip(("train_paths", "eval_paths"), write_records(tmp_path / "runs", pairs))))
    write_summary_csv(runs=runs, path=tmp_path / "summary.csv")
    summary = pd.read_csv(tmp_path / "summary.csv").set_index(["strategy", "seed"])
    assert summary.loc[("full", 1), "degenerate_validation"] == "all 40 validation predictions are class 1"
    assert summary["degenerate_validation"].isna().sum() == 2
    md = render(runs, tmp_path)
    assert "70.00 ± 28.28% ⚠ degenerate predictions (seed 1) |" in table_row(md, "full")
    assert "⚠" not in table_row(md, "lora")
    flagged = md[md.index("## Runs with degenerate predictions"):md.index("## Hardware")]
    assert "`full` seed 1: all 40 validation predictions are class 1 at its best epoch; its test accuracy (50.00%)" in flagged


def test_no_degenerate_runs_says_none(mixed, tmp_path: Path) -> None:
    md = render(mixed, tmp_path)
    assert md[md.index("## Runs with degenerate predictions"):md.index("## Hardware")].strip().endswith("None.")
