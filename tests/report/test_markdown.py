"""Tests for ftcompare.report.markdown: the Markdown report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from records import (
    NO_BNB,
    OOM,
    eval_record,
    many_methods_runs,
    mixed_runs,
    train_record,
    write_records,
)

from ftcompare.contract import FIGURE_NAMES, figure_names
from ftcompare.methods import METHODS
from ftcompare.plan import DEFAULT_CONFIG, REFERENCE_RECIPE, load_yaml
from ftcompare.report import (
    Results,
    load_runs,
    render_markdown,
    summary_table,
    write_summary_csv,
)

# The notebook's results as the study's config holds them.
REFERENCE = load_yaml(DEFAULT_CONFIG)["report"]["reference"]


@pytest.fixture()
def mixed(tmp_path: Path):
    return mixed_runs(tmp_path / "runs")


def render(runs, tmp_path: Path, reference=REFERENCE) -> str:
    figures = {name: tmp_path / "results" / "figures" / f"{name}.png" for name in FIGURE_NAMES}
    return render_markdown(
        results=Results.of(runs),
        figures=figures,
        report_path=tmp_path / "results" / "report.md",
        sort_by="config",
        reference=reference,
        reference_recipe=REFERENCE_RECIPE,
    )


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
    failures = md[md.index("Skipped or failed") : md.index("## Hardware")]
    assert f"`qlora` seed 0: **skipped**: {NO_BNB}" in failures
    assert "`ia3` seed 0: **failed**: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0;" in failures
    assert "lora" not in failures.replace("qlora", "")
    for name in FIGURE_NAMES:
        assert f"![{name}](figures/{name}.png)" in md
    env = md[md.index("## Hardware") :]
    for text in ("NVIDIA H200", "2.13.0", "12.4", "3.11.7", "transformers: 5.24.0", "peft: 0.18.1", "abc123"):
        assert text in env


def roberta_base_runs(root: Path, device: str = "NVIDIA H200"):
    """The notebook's setting: roberta-base, all 25,000 test reviews."""
    pairs = [
        (
            train_record(s, seed, train_time=t, device=device, model="roberta-base"),
            eval_record(s, seed, accuracy=a, n_test=25_000, device=device),
        )
        for s, seed, t, a in (
            ("lora", 0, 90.0, 0.91),
            ("lora", 1, 110.0, 0.93),
            ("full", 0, 300.0, 0.95),
            ("full", 1, 340.0, 0.94),
        )
    ]
    return load_runs(**dict(zip(("train_paths", "eval_paths"), write_records(root, pairs))))


def test_markdown_reference_comparison(tmp_path: Path) -> None:
    md = render(roberta_base_runs(tmp_path / "runs"), tmp_path)
    section = md[md.index("## Comparison with the reference notebook") :]
    # ours lora 92.00% vs reference 93.26% -> -1.26 points; full 94.50% vs 94.15% -> +0.35.
    assert table_row(md, "lora", after="## Comparison") == "| lora | 93.26% | 92.00% | -1.26 | 2,307 s | 100 s |"
    assert "| full | 94.15% | 94.50% | +0.35 | 2,657 s | 320 s |" in section
    assert "| qlora | 93.88% | — | — | 4,030 s | — |" in section
    assert "95.50%" in section
    assert (
        "learning rate 2e-05 for every strategy, batch 16, every review padded to 512 tokens, fp32, 1 seed" in section
    )
    assert "not directly comparable" in section and "NVIDIA H200" in section and "RTX 3080" in section


def test_reference_comparison_left_out_when_the_setting_differs(mixed, tmp_path: Path) -> None:
    section = render(mixed, tmp_path).split("## Comparison with the reference notebook")[1].strip()
    assert section == (
        "Left out: the reference notebook's setting differs (it fine-tuned roberta-base, this study "
        "`roberta-tiny`; it tested on all 25,000 IMDB test reviews, this study on 1,000), so its numbers "
        "would not compare."
    )


def test_reference_caveat_absent_when_setup_matches(tmp_path: Path) -> None:
    device = "NVIDIA GeForce RTX 3080"
    paths = write_records(
        tmp_path,
        [
            (
                train_record("full", 0, device=device, model="roberta-base"),
                eval_record("full", 0, n_test=25_000, accuracy=0.94, device=device),
            )
        ],
    )
    runs = load_runs(train_paths=paths[0], eval_paths=paths[1])
    md = render(runs, tmp_path)
    assert "not directly comparable" not in md
    assert "Same model, test set and hardware as the reference" in md
    assert "None." in md[md.index("Skipped or failed") :]


def test_cpu_runs_report_host_rss(tmp_path: Path) -> None:
    metrics = {
        "train_time_s": 50.0,
        "peak_gpu_mem_allocated_gb": None,
        "peak_gpu_mem_reserved_gb": None,
        "peak_rss_gb": 2.5,
        "trainable_params": 10,
        "total_params": 100,
    }
    paths = write_records(
        tmp_path, [(train_record("lora", 0, metrics=metrics, device="cpu"), eval_record("lora", 0, device="cpu"))]
    )
    runs = load_runs(train_paths=paths[0], eval_paths=paths[1])
    assert math.isnan(summary_table(runs=runs).loc[0, "peak_gpu_mem_gb"])
    md = render(runs, tmp_path)
    assert "Peak host RSS (GB" in md and "| 2.50 |" in md
    assert "CUDA: none" in md
    assert "executed on cpu" in md


def test_the_report_job_writes_a_report_when_every_run_failed(tmp_path: Path) -> None:
    from records import all_failed_pairs

    from ftcompare.report import report_job

    results = tmp_path / "results"
    train_paths, eval_paths = write_records(tmp_path / "runs", all_failed_pairs())
    prediction_paths = [path.parent / "predictions.parquet" for path in eval_paths]
    for path in prediction_paths:  # as the evaluate job leaves a run that did not train
        pd.DataFrame({"row": [], "label": [], "prediction": []}, dtype="int64").to_parquet(path)
    report_job(
        train_records=train_paths,
        eval_records=eval_paths,
        prediction_paths=prediction_paths,
        summary_path=results / "summary.csv",
        comparison_path=results / "summary_by_strategy.csv",
        report_path=results / "report.md",
        figure_paths=[results / "figures" / f"{n}.png" for n in figure_names(tuning=False)],
        reference=REFERENCE,
        baseline="full",
        sort_by="config",
        reference_recipe=REFERENCE_RECIPE,
    )
    md = (results / "report.md").read_text()
    assert "0 of 2 runs succeeded" in md
    assert md.count("**failed**") == 2
    assert "Left out: the reference notebook's setting differs (this study has no successful run)" in md
    assert "![accuracy](figures/accuracy.png)" in md


def test_markdown_names_the_model(mixed, tmp_path: Path) -> None:
    # A local folder is named by its last component, not its full path.
    assert "strategies of `roberta-tiny` for text classification" in render(mixed, tmp_path)


def test_markdown_training_settings(tmp_path: Path) -> None:
    def settings(strategy: str, *, recompute: bool, budget: int | None, lr: float, per_step: float) -> dict[str, Any]:
        record = train_record(strategy, 0)
        record["config"] |= {
            "max_tokens_per_batch": budget,
            "gradient_checkpointing": recompute,
            "batch_size": 64,
            "epochs": 3,
        }
        record["metrics"] |= {"precision": "bf16", "effective_learning_rate": lr, "mean_reviews_per_step": per_step}
        return record

    pairs = [
        (settings("full", recompute=False, budget=8192, lr=1.94e-5, per_step=30.04), eval_record("full", 0)),
        (settings("qlora", recompute=True, budget=None, lr=5e-4, per_step=64.0), eval_record("qlora", 0)),
        (train_record("ia3", 0, status="failed", reason=OOM, metrics={}), eval_record("ia3", 0, status="skipped")),
    ]
    runs = load_runs(**dict(zip(("train_paths", "eval_paths"), write_records(tmp_path / "runs", pairs))))
    md = render(runs, tmp_path)
    section = md[md.index("## Training settings") : md.index("## Figures")]
    assert "| full | bf16 | 1.94e-05 | 30.0 (at most 64) | 8192 | no | 3 | — |" in section
    assert "| qlora | bf16 | 0.0005 | 64.0 (at most 64) | none | yes | 3 | — |" in section
    assert "| ia3 | — | — | — | — | — | — | — |" in section  # a failed run without settings


def test_degenerate_run_is_flagged_in_the_summary_and_beside_its_accuracy(tmp_path: Path) -> None:
    flat = train_record("full", 1)
    flat["metrics"]["degenerate_validation"] = "all 40 validation predictions are class 1"
    pairs = [
        (train_record("full", 0), eval_record("full", 0, accuracy=0.9)),
        (flat, eval_record("full", 1, accuracy=0.5)),
        (train_record("lora", 0), eval_record("lora", 0, accuracy=0.8)),
    ]
    runs = load_runs(**dict(zip(("train_paths", "eval_paths"), write_records(tmp_path / "runs", pairs))))
    write_summary_csv(table=summary_table(runs=runs), path=tmp_path / "summary.csv")
    summary = pd.read_csv(tmp_path / "summary.csv").set_index(["strategy", "seed"])
    assert summary.loc[("full", 1), "degenerate_validation"] == "all 40 validation predictions are class 1"
    assert summary["degenerate_validation"].isna().sum() == 2
    md = render(runs, tmp_path)
    assert "70.00 ± 28.28% ⚠ degenerate predictions (seed 1) |" in table_row(md, "full")
    assert "⚠" not in table_row(md, "lora")
    flagged = md[md.index("## Runs that did not learn") : md.index("## Hardware")]
    assert (
        "`full` seed 1: all 40 validation predictions are class 1 at its best epoch; its test accuracy (50.00%)"
        in flagged
    )


def test_no_degenerate_runs_says_none(mixed, tmp_path: Path) -> None:
    md = render(mixed, tmp_path)
    assert md[md.index("## Runs that did not learn") : md.index("## Hardware")].strip().endswith("None.")


def inference_runs(root: Path, merged_error: str | None = None):
    """full, lora and qlora with the evaluate job's inference costs (one seed each)."""
    costs = {
        "full": {"eval_reviews_per_s": 1000.0, "latency_p50_ms": 5.0, "latency_p95_ms": 6.0},
        "lora": {
            "eval_reviews_per_s": 900.0,
            "latency_p50_ms": 6.0,
            "latency_p95_ms": 7.5,
            "merged_eval_reviews_per_s": 1000.0,
            "merged_latency_p50_ms": 5.0,
            "merged_latency_p95_ms": 6.0,
            "merged_agreement": 1.0,
        },
        "qlora": {
            "eval_reviews_per_s": 450.0,
            "latency_p50_ms": 12.0,
            "latency_p95_ms": 15.0,
            "merged_eval_reviews_per_s": 990.0,
            "merged_latency_p50_ms": 5.1,
            "merged_latency_p95_ms": 6.2,
            "merged_agreement": 0.999,
        },
    }
    pairs = []
    for strategy, metrics in costs.items():
        record = eval_record(strategy, 0)
        record["metrics"] |= metrics
        if merged_error and strategy == "qlora":
            record["metrics"] = {k: v for k, v in record["metrics"].items() if not k.startswith("merged")} | {
                "merged_error": merged_error
            }
        pairs.append((train_record(strategy, 0), record))
    return load_runs(**dict(zip(("train_paths", "eval_paths"), write_records(root, pairs))))


def test_inference_cost_section_and_summary_columns(tmp_path: Path) -> None:
    runs = inference_runs(tmp_path / "runs")
    md = render(runs, tmp_path)
    section = md[md.index("## Inference cost") : md.index("## Differences")]
    assert table_row(section, "full") == "| full | full | 1,000 | 5.0 / 6.0 ms | — | — | — |"
    assert table_row(section, "lora") == "| lora | lora | 900 | 6.0 / 7.5 ms | 1,000 | 5.0 / 6.0 ms | 100.00% |"
    assert table_row(section, "qlora") == "| qlora | qlora | 450 | 12.0 / 15.0 ms | 990 | 5.1 / 6.2 ms | 99.90% |"
    # The task's rows in its own words: "examples" where nothing names them.
    assert "`qlora` (4-bit base) labels 450 test examples/s against `lora`'s 900 (0.50x)" in section
    assert "one example in 12.0 ms against 6.0 ms (median); merged, both are a plain model" in section
    table = summary_table(runs=runs).set_index("strategy")
    assert table.loc["qlora", "merged_latency_p95_ms"] == 6.2 and math.isnan(table.loc["full", "merged_agreement"])
    assert table.loc["lora", "latency_p50_ms"] == 6.0


def test_a_failed_merge_is_reported_not_hidden(tmp_path: Path) -> None:
    md = render(inference_runs(tmp_path / "runs", merged_error="RuntimeError: no memory"), tmp_path)
    section = md[md.index("## Inference cost") : md.index("## Differences")]
    assert "- `qlora` seed 0: merging failed: RuntimeError: no memory" in section
    assert table_row(section, "qlora") == "| qlora | qlora | 450 | 12.0 / 15.0 ms | — | — | — |"
    assert "merged, both" not in section


def test_many_methods_sorted_by_accuracy_with_their_own_and_head_parameters(tmp_path: Path) -> None:
    runs = many_methods_runs(tmp_path / "runs")
    figures = {name: tmp_path / "results" / "figures" / f"{name}.png" for name in FIGURE_NAMES}
    md = render_markdown(
        results=Results.of(runs), figures=figures, report_path=tmp_path / "results" / "report.md", sort_by="accuracy"
    )
    results = md[md.index("## Results") : md.index("## Inference cost")]
    rows = [line.split(" | ")[0].lstrip("| ") for line in results.splitlines() if line.startswith("| ")][1:]
    accuracy = {run.strategy: run.eval["metrics"]["accuracy"] for run in runs}
    assert rows == sorted(accuracy, key=lambda s: -accuracy[s]) and len(rows) == len(METHODS) - 1
    assert "| Method / head params |" in results
    assert "| 294,912 / 592,130 |" in table_row(md, "lora")
    assert "| 124,054,272 / 592,130 |" in table_row(md, "full")
    # Config order with `sort_by: config`.
    default = render_markdown(
        results=Results.of(runs), figures=figures, report_path=tmp_path / "r.md", sort_by="config"
    )
    section = default[default.index("## Results") : default.index("## Inference cost")]
    assert [line.split(" | ")[0].lstrip("| ") for line in section.splitlines() if line.startswith("| ")][1:] == [
        run.strategy for run in runs
    ]


def test_summary_keeps_trainable_params_and_splits_it(tmp_path: Path) -> None:
    table = summary_table(runs=many_methods_runs(tmp_path / "runs")).set_index("strategy")
    assert table.loc["lora", "trainable_params"] == 887_042  # the total, as before the split
    assert (table.loc["lora", "method_params"], table.loc["lora", "head_params"]) == (294_912, 592_130)
    assert table.loc["prefix_tuning", "family"] == "virtual tokens" and table.loc["bitfit", "family"] == "selective"


# ----------------------------------------------------------------------------- across tasks

GLUE = {"sst2": {"name": "nyu-mll/glue", "config": "sst2"}, "rte": {"name": "nyu-mll/glue", "config": "rte"}}


def study_markdown(tmp_path: Path, datasets=GLUE, **kwargs) -> str:
    from records import write_study

    from ftcompare.report import StudyResults, across_tasks, render_study_markdown

    train_paths, eval_paths, prediction_paths = write_study(tmp_path / "runs", **kwargs)
    study = StudyResults.load(
        train_paths=train_paths, eval_paths=eval_paths, prediction_paths=prediction_paths, baseline="full"
    )
    return render_study_markdown(
        study=study,
        across=across_tasks(study),
        cell_figures={},
        across_figures={
            name: tmp_path / "results" / "figures" / f"{name}.png" for name in ("tasks_heatmap", "tasks_ranks")
        },
        report_path=tmp_path / "results" / "report.md",
        sort_by="config",
        reference=None,
        reference_recipe=REFERENCE_RECIPE,
        datasets=datasets,
    )


def test_one_cell_study_reports_as_today(mixed, tmp_path: Path) -> None:
    from ftcompare.report import StudyResults, across_tasks, render_study_markdown

    study = StudyResults.of(mixed)
    figures = {name: tmp_path / "results" / "figures" / f"{name}.png" for name in FIGURE_NAMES}
    kwargs = dict(
        report_path=tmp_path / "results" / "report.md",
        sort_by="config",
        reference=REFERENCE,
        reference_recipe=REFERENCE_RECIPE,
    )
    assert render_study_markdown(
        study=study,
        across=across_tasks(study),
        cell_figures={next(iter(study.cells)): figures},
        across_figures={},
        **kwargs,
    ) == render_markdown(results=Results.of(mixed), figures=figures, **kwargs)


def test_report_job_across_tasks_writes_tables_figures_and_the_opening_paragraph(tmp_path: Path) -> None:
    from records import write_study

    from ftcompare.report import report_job

    train_paths, eval_paths, prediction_paths = write_study(tmp_path / "runs")
    results = tmp_path / "results"
    across_figures = [results / "figures" / f"{name}.png" for name in ("tasks_heatmap", "tasks_ranks")]
    cell_figures = [
        results / "figures" / task / model / f"{name}.png"
        for task in ("sst2", "rte")
        for model in ("roberta-base", "bert")
        for name in figure_names(tuning=False)
    ]
    report_job(
        train_records=train_paths,
        eval_records=eval_paths,
        prediction_paths=prediction_paths,
        summary_path=results / "summary.csv",
        comparison_path=results / "summary_by_strategy.csv",
        report_path=results / "report.md",
        figure_paths=across_figures + cell_figures,
        reference=None,
        baseline="full",
        sort_by="config",
        reference_recipe=REFERENCE_RECIPE,
        across_path=results / "summary_across_tasks.csv",
        datasets=GLUE,
    )
    for path in across_figures + cell_figures:
        assert path.read_bytes().startswith(b"\x89PNG"), path
    assert list(pd.read_csv(results / "summary.csv").columns[:2]) == ["task", "model"]
    assert list(pd.read_csv(results / "summary_by_strategy.csv").columns[:2]) == ["task", "model"]
    across = pd.read_csv(results / "summary_across_tasks.csv")
    assert len(across) == 6 and across.loc[2, "worse"] == 1
    assert set(pd.read_csv(results / "summary_by_strategy.csv")["verdict"]) == {
        "baseline",
        "equivalent",
        "inconclusive",
        "worse",
    }

    md = (results / "report.md").read_text()
    paragraphs = md.split("\n\n")
    # The answer first: the title, the verdict paragraph, "Which strategy?", then the across-task table.
    # One seed, no tuning, 100 steps a run (tests/records.py): too small to rank, said first.
    assert paragraphs[1].startswith(
        "This study is too small to rank strategies (one seed per strategy, no tuning, 100 optimizer steps per run)"
    )
    assert md.count("This study is too small to rank strategies") == 1  # not again in each cell
    opening = paragraphs[2]
    assert paragraphs[3] == "## Which strategy?"
    assert md.index("## Which strategy?") < md.index("## Across tasks") < md.index("## sst2 × roberta-base")
    assert "on 2 tasks (`sst2` and `rte`) with 2 models" in opening
    assert "Holm-adjusted over all 8 tests at the 5% level" in opening
    assert "indistinguishable" not in md
    assert opening.count("`lora` is equivalent on sst2, inconclusive on rte") == 2  # once per model
    assert opening.count("`bitfit` is equivalent on rte, worse on sst2") == 2
    assert "With one seed per strategy, each test compares two trained models, not two methods" in opening
    assert "The smallest difference each task's test detects with 80% power at this size: sst2 ±" in opening
    assert (
        "`lora` trains in 0.33× `full`'s time, with 0.8% of its trainable parameters and 0.5× its peak memory"
        in opening
    )
    assert (
        "`bitfit` trains in 0.2× `full`'s time, with 0.08% of its trainable parameters and 0.4× its peak memory"
        in opening
    )
    # The across-task table and its figures come before the cells' sections.
    assert md.index(
        "| bert | bitfit | 60.0 | 90.0 | 75.0 | 2.75 | 0 / 1 / 0 / 1 / 0 | 0.2× | 0.08% | 0.4× |"
    ) < md.index("## sst2 × roberta-base")
    # The hardware and versions once, at the end.
    assert md.count("## Hardware and software") == 1 and md.index("## Hardware and software") > md.index(
        "## rte × bert"
    )
    assert "![tasks_heatmap](figures/tasks_heatmap.png)" in md and "![tasks_ranks](figures/tasks_ranks.png)" in md
    cell = md[md.index("## rte × bert") :]
    assert "### Results" in cell and "### Differences from the baseline" in cell
    assert "![accuracy](figures/rte/bert/accuracy.png)" in cell


def test_lora_paper_figures_stand_beside_ours_where_the_study_matches(tmp_path: Path) -> None:
    md = study_markdown(tmp_path)
    block = md[md.index("## Beside the LoRA paper") : md.index("## sst2 × roberta-base")]
    # roberta-base (FacebookAI/roberta-base) on GLUE's sst2 and rte; bert-base-uncased is not in the paper.
    assert (
        "| sst2 (nyu-mll/glue sst2) | roberta-base | accuracy | full fine-tuning | 94.8 | `full`: 90.0 | -4.8 |"
        in block
    )
    assert "| rte (nyu-mll/glue rte) | roberta-base | accuracy | LoRA | 86.6 | `lora`: 92.0 | +5.4 |" in block
    assert "| bert |" not in block
    assert "arXiv:2106.09685" in block
    assert "best epoch" in block and "median of 5 runs" in block and "never used for a choice" in block


@pytest.mark.parametrize(
    "datasets",
    [None, {"sst2": {"name": "stanfordnlp/sst2", "config": None}, "rte": {"name": "nyu-mll/glue", "config": "wnli"}}],
)
def test_lora_paper_block_left_out_where_the_study_does_not_match(tmp_path: Path, datasets) -> None:
    md = study_markdown(tmp_path, datasets=datasets)
    assert "LoRA paper" not in md and "2106.09685" not in md
    assert md.startswith("# Fine-tuning strategies compared across tasks")


def test_runs_that_did_not_learn_are_named_first_and_the_majority_class_has_a_row(tmp_path: Path) -> None:
    from records import all_majority_study

    from ftcompare.report import across_tasks, render_study_markdown

    study = all_majority_study(tmp_path / "runs", units={"sst2": "sentences"})
    md = render_study_markdown(
        study=study,
        across=across_tasks(study),
        cell_figures={},
        across_figures={name: tmp_path / f"{name}.png" for name in ("tasks_heatmap", "tasks_ranks")},
        report_path=tmp_path / "report.md",
        sort_by="config",
        datasets={"sst2": {"unit": "sentences"}, "agnews": {}},
    )
    opening = md.split("\n\n")[2]
    assert "Did not learn (no better than the majority class" in opening
    assert "`full`, `lora` and `bitfit` on agnews" in opening
    assert "indistinguishable" not in md
    # Which strategy? is answered on what learned; the mean of two metrics says it is one.
    which = md[md.index("## Which strategy?") : md.index("## Across tasks")]
    assert "Best on the primary metric: `full` (the highest mean: sst2 94.0 accuracy). Set aside: agnews" in which
    assert "Set aside: agnews, where no strategy learned" in which
    assert "| Model | Strategy | sst2 (accuracy) | agnews (macro-F1) | Mean of different metrics |" in md
    assert "| roberta-base | lora | " in md and "✗ did not learn" in table_row(md, "roberta-base")
    cell = md[md.index("## agnews × roberta-base") :]
    assert table_row(cell, "majority class (`0`)").startswith(
        "| majority class (`0`) | constant | 40.00% | — | 14.29% |"
    )
    assert "✗ did not learn (seed 0)" in table_row(cell, "full")
    assert "Test examples/s" in cell and "reviews" not in md  # no task here is reviews
    assert "Test sentences/s" in md[md.index("## sst2 × roberta-base") : md.index("## agnews × roberta-base")]
    assert "## Comparison with the reference notebook" not in md  # neither task is IMDB
    assert md.count("## Hardware and software") == 1


def test_the_majority_class_and_a_rote_answer_go_by_the_datas_class_names(tmp_path: Path) -> None:
    import json

    import numpy as np
    from records import write_cells

    from ftcompare.report import StudyResults

    labels = np.repeat([0, 1], [120, 80])
    lora = np.ones(200, dtype=int)
    lora[:10] = 0
    paths = write_cells(
        tmp_path / "runs", {("imdb", "m", "accuracy"): {"full": (labels, labels), "lora": (labels, lora)}}
    )
    tokenized = tmp_path / "tokenized"
    tokenized.mkdir()
    (tokenized / "tokenization.json").write_text(json.dumps({"label_names": ["neg", "pos"]}))
    for path in paths[0]:
        record = json.loads(path.read_text())
        path.write_text(json.dumps(record | {"tokenized_dir": str(tokenized)}))
    study = StudyResults.load(**dict(zip(("train_paths", "eval_paths", "prediction_paths"), paths)), baseline="full")
    md = render_markdown(
        results=study.cells[("imdb", "m")], figures={}, report_path=tmp_path / "report.md", sort_by="config"
    )
    assert table_row(md, "majority class (`neg`)").startswith("| majority class (`neg`) | constant | 60.00% |")
    assert "predicts class pos for 95.0% of test rows" in md[md.index("## Runs that did not learn") :]
