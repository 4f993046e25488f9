"""Tests for ftcompare.report.published: each paper's figures beside ours, where the study matches it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from records import eval_record, train_record, write_records

from ftcompare.contract import LABELS as METRICS
from ftcompare.methods import METHODS
from ftcompare.report import PUBLISHED_DIR, StudyResults, load_papers, published_section

REPO_ROOT = Path(__file__).resolve().parents[2]
GLUE_TASKS = yaml.safe_load((REPO_ROOT / "config" / "glue.yaml").read_text())["tasks"]
GLUE = {task: {"name": "nyu-mll/glue", "config": task} for task in ("sst2", "rte", "cola")}
# A constructed GLUE study: two encoders, each strategy's accuracy on each task (its records' confusion
# matrix gives every run an MCC of 0.8).
ENCODERS = {"roberta-base": "FacebookAI/roberta-base", "deberta": "microsoft/deberta-v3-base"}
STRATEGIES = ("full", "bitfit", "lora", "ia3", "oft", "boft", "adalora")
ACCURACY = {"full": 0.92, "bitfit": 0.90, "lora": 0.91, "ia3": 0.89, "oft": 0.88, "boft": 0.87, "adalora": 0.93}


def glue_study(root: Path) -> StudyResults:
    train_paths, eval_paths = [], []
    for model, name_or_path in ENCODERS.items():
        for task in GLUE:
            pairs = []
            for strategy in STRATEGIES:
                train = train_record(strategy, 0, model=name_or_path, cell=(task, model, "accuracy"))
                if strategy == "boft":  # no named method: PEFT's BOFT through the `peft` method
                    train["method"] = "peft"
                    train["config"]["peft"] = {"peft_type": "BOFT"}
                pairs.append((train, eval_record(strategy, 0, accuracy=ACCURACY[strategy], cell=(task, model))))
            trains, evals = write_records(root / task / model, pairs)
            train_paths += trains
            eval_paths += evals
    return StudyResults.load(train_paths=train_paths, eval_paths=eval_paths, baseline="full")


@pytest.fixture(scope="module")
def section(tmp_path_factory) -> str:
    return published_section(glue_study(tmp_path_factory.mktemp("glue")), GLUE, load_papers())


def test_the_road_rows_stand_beside_ours_on_roberta_base(section: str) -> None:
    road = section[section.index("### Beside the RoAd paper") :]
    road = road[: road.index("\n### ") if "\n### " in road else len(road)]
    for label, strategy, published, ours in [
        ("full fine-tuning", "full", 94.4, 92.0),
        ("BitFit", "bitfit", 94.0, 90.0),
        ("LoRA", "lora", 93.9, 91.0),
        ("(IA)3", "ia3", 94.0, 89.0),
        ("OFT", "oft", 92.8, 88.0),
        ("BOFT", "boft", 92.5, 87.0),
    ]:
        row = (
            f"| sst2 (nyu-mll/glue sst2) | roberta-base | accuracy | {label} | {published:.1f} | "
            f"`{strategy}`: {ours:.1f} | {ours - published:+.1f} |"
        )
        assert row in road, row
    assert "| cola (nyu-mll/glue cola) | roberta-base | mcc | OFT | 50.4 | `oft`: 80.0 | +29.6 |" in road
    assert "| deberta |" not in road and "AdaLoRA" not in road  # not in the paper: no row
    # The protocol difference, in one line.
    protocol = next(line for line in road.splitlines() if line.startswith("Protocol: "))
    assert "mean of 3 seeds" in protocol and "validation" in protocol and "mean over our seeds" in protocol


def test_the_adalora_rows_stand_beside_ours_on_deberta_v3_base(section: str) -> None:
    adalora = section[section.index("### Beside the AdaLoRA paper") :]
    adalora = adalora[: adalora.index("\n### ") if "\n### " in adalora else len(adalora)]
    # Both of the paper's LoRA rows beside our one LoRA strategy, both AdaLoRA rows beside ours.
    assert "| rte (nyu-mll/glue rte) | deberta | accuracy | LoRA r=2, every weight matrix (0.33M) | 85.56 |" in adalora
    assert "| rte (nyu-mll/glue rte) | deberta | accuracy | LoRA r=8, every weight matrix (1.33M) | 85.20 |" in adalora
    assert (
        "| rte (nyu-mll/glue rte) | deberta | accuracy | AdaLoRA (1.27M) | 88.09 | `adalora`: 93.0 | +4.9 |" in adalora
    )
    assert "| roberta-base |" not in adalora and "OFT" not in adalora and "`ia3`" not in adalora
    assert "mean of 5 seeds" in next(line for line in adalora.splitlines() if line.startswith("Protocol: "))


def test_the_lora_paper_keeps_its_rows(section: str) -> None:
    lora = section[section.index("### Beside the LoRA paper") :]
    assert "| rte (nyu-mll/glue rte) | roberta-base | accuracy | LoRA | 86.6 | `lora`: 91.0 | +4.4 |" in lora


def test_no_paper_matches_a_task_it_does_not_report(tmp_path: Path) -> None:
    study = glue_study(tmp_path)
    assert published_section(study, {"sst2": {"name": "stanfordnlp/sst2", "config": None}}, load_papers()) is None
    assert published_section(study, None, load_papers()) is None


@pytest.mark.parametrize("path", sorted(PUBLISHED_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_each_paper_names_its_source_protocol_metrics_and_methods(path: Path) -> None:
    paper = yaml.safe_load(path.read_text())
    assert paper["citation"] and paper["source"] and paper["title"]
    assert "\n" not in paper["protocol"].strip()  # one line in the report
    assert set(paper["metrics"]) <= set(GLUE_TASKS) and set(paper["metrics"].values()) <= set(METRICS)
    for row in paper["rows"]:
        assert row["method"] in METHODS or row["method"] == "boft", row  # boft: a `peft` strategy
        assert set(row["values"]) == set(paper["metrics"]), row["label"]
        assert all(0 < value <= 100 for value in row["values"].values()), row["label"]
