"""Published GLUE figures beside a study's own, where the study matches a paper.

Each paper is one YAML file in config/published/: its citation, where its figures were
checked (`source`), how its protocol differs from ours (`protocol`, one line), the encoders
it used (`models`: name_or_path spellings), the hub datasets its tasks come from
(`datasets`), each task's metric (`metrics`: hub configuration -> metric) and its rows
(`rows`: the paper's label, the method it maps to, its figure per task; × 100, shown to the
paper's `decimals`, 1 by default). A study's
(task, model) cell matches a paper where the task's data is one of its datasets with a
configuration it reports and every run of the cell starts from one of its encoders; each of
the cell's strategies whose method is a row's stands beside that row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ftcompare.plan import REPO_ROOT, load_yaml
from ftcompare.report.tables import RunRecord, number

PUBLISHED_DIR = REPO_ROOT / "config" / "published"
_MISSING = "—"


def load_papers(folder: Path = PUBLISHED_DIR) -> list[dict[str, Any]]:
    """Every paper's file in `folder`, in file-name order; none where the folder is absent."""
    folder = Path(folder)
    return [load_yaml(path) for path in sorted(folder.glob("*.yaml"))] if folder.is_dir() else []


def run_method(run: RunRecord) -> str:
    """The method a run stands for beside a paper: its named method, or for `peft` (any other
    PEFT method, by its config) the PEFT type in lower case (e.g. `boft`)."""
    if run.method == "peft":
        peft = (run.train.get("config") or {}).get("peft") or {}
        return str(peft.get("peft_type", "peft")).lower()
    return run.method


def _ours(runs: Sequence[RunRecord], strategy: str, metric: str) -> float:
    """The strategy's mean over its successful seeds on `metric`, × 100; NaN where there is none."""
    values = [number(run.eval.get("metrics") or {}, metric) for run in runs if run.strategy == strategy and run.ok]
    values = [v for v in values if not math.isnan(v)]
    return 100 * sum(values) / len(values) if values else math.nan


def paper_rows(study: Any, datasets: Mapping[str, Mapping[str, Any]], paper: Mapping[str, Any]) -> list[str]:
    """The table rows of one paper beside the study's matching cells (none where nothing matches)."""
    lines = []
    for (task, model), results in study.cells.items():
        data = datasets.get(task) or {}
        config = data.get("config")
        if data.get("name") not in paper["datasets"] or config not in paper["metrics"]:
            continue
        encoders = {str((run.train.get("config") or {}).get("model_name_or_path", "")) for run in results.runs}
        if not encoders or not encoders <= set(paper["models"]):
            continue
        metric = paper["metrics"][config]
        methods = {run.strategy: run_method(run) for run in results.runs}
        for row in paper["rows"]:
            theirs = (row.get("values") or {}).get(config)
            if theirs is None:
                continue
            for strategy in (s for s, method in methods.items() if method == row["method"]):
                ours = _ours(results.runs, strategy, metric)
                diff = _MISSING if math.isnan(ours) else f"{ours - float(theirs):+.1f}"
                shown = _MISSING if math.isnan(ours) else f"{ours:.1f}"
                lines.append(
                    f"| {task} ({data.get('name')} {config}) | {model} | {metric} | {row['label']} | "
                    f"{float(theirs):.{paper.get('decimals', 1)}f} | `{strategy}`: {shown} | {diff} |"
                )
    return lines


def published_section(
    study: Any, datasets: Mapping[str, Mapping[str, Any]] | None, papers: Sequence[Mapping[str, Any]]
) -> str | None:
    """The section of the report that sets each paper's figures beside ours, a table per paper
    with its citation and, in one line, how its protocol differs; None where no paper matches."""
    if not datasets:
        return None
    blocks = []
    for paper in papers:
        rows = paper_rows(study, datasets, paper)
        if not rows:
            continue
        header = "| Task | Model | Metric | Paper's row | Published | Ours (mean over seeds) | Ours − published |"
        blocks.append(
            f"### {paper['title']}\n\n"
            + "\n".join([header, "|" + "---|" * 7, *rows])
            + f"\n\nPublished: {paper['citation']}\n\nProtocol: {paper['protocol']}"
            + (f"\n\nChecked: {paper['source']}" if paper.get("source") else "")
        )
    return "\n\n".join(blocks) if blocks else None
