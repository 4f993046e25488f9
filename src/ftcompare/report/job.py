"""The report rule's job: the tables, figures, report.md and its HTML page from every
run's records, and nothing stale beside them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def report_job(
    *,
    train_records: Sequence[Path],
    eval_records: Sequence[Path],
    prediction_paths: Sequence[Path],
    summary_path: Path,
    comparison_path: Path,
    report_path: Path,
    figure_paths: Sequence[Path],
    reference: Mapping[str, Any] | None,
    baseline: str,
    sort_by: str,
    reference_recipe: Path,
    tuning_summary: Path | Sequence[Path] | None = None,
    selected: Path | Sequence[Path] | None = None,
    across_path: Path | None = None,
    tuning_path: Path | None = None,
    datasets: Mapping[str, Mapping[str, Any]] | None = None,
    equivalence_margin: float | None = None,
    page_path: Path | None = None,
) -> None:
    """The summary tables, the figures and the Markdown report, from one reading of the records
    (`sort_by`: the order of the report's results tables, config `report.sort_by`;
    `reference_recipe`: config/reference-recipe.yaml, the reference's recipe in words).
    Several (task, model) cells: `tuning_summary`/`selected` list each cell's, `figure_paths`
    hold each cell's figures under figures/{task}/{model}/ and the across-task ones
    (figures.ACROSS_FIGURE_CAPTIONS); `across_path` is summary_across_tasks.csv, `tuning_path`
    every cell's trials in one table, `datasets` each task's data block (for the published
    figures it may stand beside, and its rows' name in words), `equivalence_margin` config
    report.equivalence_margin (None: stats.DEFAULT_EQUIVALENCE_MARGIN), `page_path` report.md
    as HTML for the HTML report's landing page (ftcompare.report.html). What an earlier, larger
    study left of these and this one no longer produces goes (remove_stale_report_outputs)."""
    from ftcompare.report.html import write_report_page
    from ftcompare.report.markdown import render_study_markdown
    from ftcompare.report.tables import across_tasks

    study = _load_study(
        train_records,
        eval_records,
        prediction_paths,
        baseline=baseline,
        tuning_summary=tuning_summary,
        selected=selected,
        datasets=datasets,
        equivalence_margin=equivalence_margin,
    )
    across = across_tasks(study)
    _write_tables(
        study,
        across,
        summary_path=summary_path,
        comparison_path=comparison_path,
        tuning_path=tuning_path,
        across_path=across_path,
    )
    cell_figures, across_figures = _draw_figures(study, across, figure_paths)
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(
        render_study_markdown(
            study=study,
            across=across,
            cell_figures=cell_figures,
            across_figures=across_figures,
            report_path=report_path,
            sort_by=sort_by,
            reference=reference,
            reference_recipe=reference_recipe,
            datasets=datasets,
        )
    )
    if page_path is not None:
        write_report_page(report_path, page_path)
    remove_stale_report_outputs(report_path.parent, figure_paths=figure_paths, across_path=across_path)


def _listed(value: Path | Sequence[Path] | None) -> list[Path]:
    return [] if value is None else [Path(value)] if isinstance(value, (str, Path)) else [Path(v) for v in value]


def _load_study(
    train_records: Sequence[Path],
    eval_records: Sequence[Path],
    prediction_paths: Sequence[Path],
    *,
    baseline: str,
    tuning_summary: Path | Sequence[Path] | None,
    selected: Path | Sequence[Path] | None,
    datasets: Mapping[str, Mapping[str, Any]] | None,
    equivalence_margin: float | None,
) -> Any:
    """Every run's records, read once into each cell's results (tables.StudyResults)."""
    from ftcompare.plan import task_unit
    from ftcompare.report.stats import DEFAULT_EQUIVALENCE_MARGIN
    from ftcompare.report.tables import StudyResults

    return StudyResults.load(
        train_paths=train_records,
        eval_paths=eval_records,
        prediction_paths=prediction_paths,
        baseline=baseline,
        tuning_summaries=_listed(tuning_summary),
        selections=_listed(selected),
        units={task: task_unit(task, data) for task, data in (datasets or {}).items()},
        margin=DEFAULT_EQUIVALENCE_MARGIN if equivalence_margin is None else float(equivalence_margin),
    )


def _write_tables(
    study: Any,
    across: Any,
    *,
    summary_path: Path,
    comparison_path: Path,
    tuning_path: Path | None,
    across_path: Path | None,
) -> None:
    """The CSV tables: per run, per strategy, the trials (where tuned) and across tasks (several cells)."""
    from ftcompare.report.tables import write_summary_csv

    write_summary_csv(table=study.table, path=summary_path)
    write_summary_csv(table=study.comparison, path=comparison_path)
    if tuning_path is not None and study.tuning is not None:
        write_summary_csv(table=study.tuning, path=tuning_path)
    if across_path is not None:
        write_summary_csv(table=across, path=across_path)


def _draw_figures(study: Any, across: Any, figure_paths: Sequence[Path]) -> tuple[dict, dict]:
    """Each cell's figures and the across-task ones, at the paths the workflow declared:
    (figures by cell, across-task figures)."""
    from ftcompare.contract import ACROSS_FIGURE_CAPTIONS
    from ftcompare.report.figures import plot_across_tasks, plot_figures

    across_paths = [Path(p) for p in figure_paths if Path(p).stem in ACROSS_FIGURE_CAPTIONS]
    cell_paths = [Path(p) for p in figure_paths if Path(p).stem not in ACROSS_FIGURE_CAPTIONS]
    across_figures = {}
    if across_paths:
        metrics = {run.task: run.metric for results in study.cells.values() for run in results.runs}
        across_figures = plot_across_tasks(across=across, tasks=study.tasks, metrics=metrics, paths=across_paths)
    cell_figures = {}
    for cell, results in study.cells.items():
        # One cell takes every figure; several take those under figures/{task}/{model}/.
        mine = (
            cell_paths
            if len(study.cells) == 1
            else [p for p in cell_paths if (p.parent.parent.name, p.parent.name) == cell]
        )
        cell_figures[cell] = plot_figures(results=results, paths=mine)
    return cell_figures, across_figures


def remove_stale_report_outputs(results: Path, *, figure_paths: Sequence[Path], across_path: Path | None) -> list[Path]:
    """Remove what the report job wrote for an earlier study and this one does not produce:
    the across-task table where the study has one cell, and under results/figures/ every
    figure of the report's names that is not among `figure_paths` (a cell, or the tuning, that
    is gone), then the folders left empty. Nothing else: runs, tuning and caches are other
    jobs'. Returns what it removed."""
    from ftcompare.contract import ACROSS_TABLE, FIGURE_CAPTIONS

    results = Path(results)
    stale = []
    if across_path is None and (results / ACROSS_TABLE).is_file():
        stale.append(results / ACROSS_TABLE)
    figures = results / "figures"
    keep = {Path(p).resolve() for p in figure_paths}
    if figures.is_dir():
        stale += sorted(p for p in figures.rglob("*.png") if p.stem in FIGURE_CAPTIONS and p.resolve() not in keep)
    for path in stale:
        log.info("removed %s: the study no longer produces it", path)
        path.unlink()
    if figures.is_dir():
        for folder in sorted((p for p in figures.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            if not any(folder.iterdir()):
                folder.rmdir()
    return stale
