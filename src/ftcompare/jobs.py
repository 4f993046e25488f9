"""One function per workflow stage: what each Snakemake rule script calls.

Each takes plain paths and settings (a config section or a resolved RunSpec), does its
stage, and writes its outputs.
Fine-tune and evaluate always write a record (status ok, skipped or failed) so that the
report can show every run; only preemption (SIGTERM) and bad input exit non-zero.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ftcompare.config import RunSpec
from ftcompare.data import SPLITS
from ftcompare.errors import ConfigError
from ftcompare.progress import JobFiles, Reporter
from ftcompare.provenance import now, provenance, write_json
from ftcompare.records import Status, cell_settings, read_record, versioned, write_attempt, write_selection

log = logging.getLogger("ftcompare")


def setup_logging(log_path: str | Path | None) -> None:
    """Send this package's log and warnings to the rule's log file (and stderr)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="a", encoding="utf-8"))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )
    logging.captureWarnings(True)


@contextlib.contextmanager
def one_line_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Ends the job on an error of `kinds` (a message that says what to do) with that one
    line in the rule's log and on stderr, not a traceback, and exit status 1."""
    try:
        yield
    except kinds as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None


def start_job(*, log_path: str | Path | None, gpus: int = 0, network: bool = False) -> list[str]:
    """What every rule script does first, before torch is imported: log to the rule's
    log file; switch the Hugging Face Hub off unless the job is a fetch (`network`);
    claim `gpus` devices of its own (ftcompare.devices). Returns the claimed devices."""
    from ftcompare.devices import claim_for_job
    from ftcompare.fetch import OFFLINE_ENV

    if not network:
        os.environ.update(OFFLINE_ENV)
    setup_logging(log_path)
    if os.environ.get("SLURM_JOB_ID"):
        # Ties this log to the cluster's records (sacct, the scheduler's own log file).
        log.info("SLURM job %s on %s", os.environ["SLURM_JOB_ID"], os.uname().nodename)
    return claim_for_job(gpus)


def fetched_splits(folder: str | Path | None) -> dict[str, Path]:
    """The Parquet file of each split the fetch_data rule wrote into `folder` (train, test,
    and validation where the data has one); none for local sources (no folder)."""
    if not folder:
        return {}
    return {
        split: Path(folder) / f"{split}.parquet" for split in SPLITS if (Path(folder) / f"{split}.parquet").is_file()
    }


def prepare_data_job(
    *,
    data_config: Mapping[str, Any],
    out_paths: Mapping[str, Path],
    summary_path: Path,
    hub_files: Mapping[str, Path] | None = None,
) -> None:
    """`hub_files`: the fetched copies of a hub dataset (ftcompare.fetch)."""
    from ftcompare.data import prepare, write_prepared

    prepared = prepare(data_config, hub_files=hub_files)
    write_prepared(prepared, out_paths=out_paths, summary_path=summary_path, settings=data_config)
    log.info("prepared data in %s: %s", Path(summary_path).parent, prepared.summary())


def tokenize_job(*, split_paths: Mapping[str, Path], model_name_or_path: str, max_length: int, out_dir: Path) -> None:
    from ftcompare.data import prepared_label_names, prepared_text_columns
    from ftcompare.tokenization import tokenize_splits

    tokenize_splits(
        split_paths=split_paths,
        model_name_or_path=model_name_or_path,
        max_length=max_length,
        out_dir=out_dir,
        # prepare_data keeps the class names in the training split's metadata (None where
        # the data names none, or the split was prepared before it kept them).
        label_names=prepared_label_names(Path(split_paths["train"])),
        text_columns=prepared_text_columns(Path(split_paths["train"])),
    )


def finetune_job(
    *,
    spec: RunSpec,
    tokenized_dir: Path,
    model_dir: Path | None,
    record_path: Path,
    checkpoint_dir: Path,
    attempt_path: Path,
    retry_marker: str,
    trial: str | None = None,
    base_model_dir: Path | None = None,
    files: JobFiles | None = None,
) -> dict[str, Any]:
    """Train one run and write its record, and the attempt file that
    `ftcompare.records.retry_marker` reads to decide whether to retry it. A tuning
    `trial` keeps no model: its record, with the validation scores, is its result.

    `base_model_dir`: the fetched copy of a hub model, loaded instead of the hub id;
    the record keeps the configured source. `files`: where the run reports its progress
    while it trains (ftcompare.progress)."""
    from ftcompare.training import train_run

    started = now()
    strategy, seed = spec.strategy, spec.seed
    if model_dir is not None:
        Path(model_dir).mkdir(parents=True, exist_ok=True)  # declared output, even if the run fails
    with _reporter(spec, kind="train" if trial is None else "trial", trial=trial, files=files) as reporter:
        result = train_run(
            spec=_load_from(spec, base_model_dir),
            tokenized_dir=tokenized_dir,
            model_out_dir=model_dir,
            checkpoint_dir=checkpoint_dir,
            base_model=spec.model_name_or_path,  # as configured: what a saved adapter names as its base
            reporter=reporter,
        )
        record = versioned(
            {
                "kind": "train",
                "task": spec.task,
                "model": spec.model,
                "strategy": strategy,
                "method": spec.method,
                "seed": seed,
                "trial": trial,
                "status": result.status,
                "reason": result.reason,
                "config": spec.to_dict(),
                "tokenized_dir": str(tokenized_dir),
                # Which source columns the model reads (a pair task: two): what `ftcompare
                # predict` and the model card read, wherever the run folder goes.
                "text_columns": _text_columns(tokenized_dir),
                "metrics": result.metrics,
                "loss_curve": result.loss_curve,
                "val_curve": result.val_curve,
                "provenance": provenance(device=result.device, started_at=started),
                "retry_marker": retry_marker,
            }
        )
        write_json(record_path, record)
        write_attempt(
            attempt_path,
            status=result.status,
            retry_marker=retry_marker,
            finished_at=record["provenance"]["finished_at"],
            retry=result.retry,
        )
        reporter.finish(result.status, result.reason)
    log.info("%s: %s%s", spec.label(trial), result.status, f" ({result.reason})" if result.reason else "")
    return record


def _text_columns(tokenized_dir: Path) -> dict[str, str | None]:
    import json

    meta = Path(tokenized_dir) / "tokenization.json"
    columns = json.loads(meta.read_text()).get("text_columns") if meta.is_file() else None
    return dict(columns) if columns else {"text": "text", "text_pair": None}


def _reporter(spec: RunSpec, *, kind: str, trial: str | None = None, files: JobFiles | None = None) -> Reporter:
    """A job's progress reporter (ftcompare.progress), named as its run is."""
    label = spec.label(trial)
    identity = {
        "strategy": spec.strategy,
        "seed": spec.seed,
        "trial": trial,
        "model": spec.model_name_or_path,
        "metric": spec.metric,  # what best_val_score is on
    }
    return Reporter(label=label, kind=kind, files=files, identity=identity, log_every=spec.log_every_steps)


def evaluate_job(
    *,
    train_record_path: Path,
    tokenized_dir: Path,
    model_dir: Path,
    record_path: Path,
    predictions_path: Path,
    card_path: Path | None = None,
    attempt_path: Path | None = None,
    retry_marker: str = "first",
    base_model_dir: Path | None = None,
    data_summary_path: Path | None = None,
    study_model: str | None = None,
    files: JobFiles | None = None,
) -> dict[str, Any]:
    """Evaluate a trained run on the test split; a run that did not train passes its status on.

    Like `finetune`, writes an attempt file (if `attempt_path` is given) so that a plain
    rerun retries a failed evaluation; `base_model_dir` as in `finetune`. `card_path`: the
    run's model card (its folder's README.md), which needs the test metrics and the data
    (`data_summary_path`, the prepared data's summary.json); a run that did not finish ok
    gets a card that says so. `study_model`: the model the study's config names (the
    workflow passes it); a train.json that names another is refused before its model is
    resolved, so that no file in a run folder decides which package is imported. `files`:
    where the evaluation reports its progress (ftcompare.progress)."""
    import pandas as pd

    from ftcompare.evaluation import evaluate_run
    from ftcompare.modelcard import write_model_card, write_unfinished_card

    started = now()
    train_record = read_record(train_record_path, kind="train")
    spec = RunSpec.from_dict(train_record["config"])
    if study_model is not None and spec.model_name_or_path != study_model:
        raise ConfigError(
            f"{train_record_path}: the run names model {spec.model_name_or_path!r}, the study's "
            f"model.name_or_path is {study_model!r}: this run folder is not the study's (retrain it)"
        )
    spec = _load_from(spec, base_model_dir)
    if train_record["status"] == Status.OK:
        with _reporter(spec, kind="eval", files=files) as reporter:
            result = evaluate_run(
                spec=spec, tokenized_dir=tokenized_dir, model_dir=model_dir, on_batch=reporter.batches
            )
            reporter.finish(result.status, result.reason)
        status, reason, metrics, device = result.status, result.reason, result.metrics, result.device
        predictions = result.predictions
    else:
        status, reason, metrics, device = train_record["status"], train_record["reason"], {}, None
        predictions = None
    if predictions is None:
        predictions = pd.DataFrame({"row": [], "label": [], "prediction": []}, dtype="int64")
    Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(predictions_path, index=False)
    cell = cell_settings(train_record)
    record = versioned(
        {
            "kind": "eval",
            # The run's cell, as its train record names it: the report pairs the two by it.
            **{key: cell[key] for key in ("task", "model")},
            "strategy": train_record["strategy"],
            "seed": train_record["seed"],
            "status": status,
            "reason": reason,
            "metrics": metrics,
            "provenance": provenance(device=device, started_at=started),
        }
    )
    if card_path is not None and train_record["status"] == Status.OK:
        summary = Path(data_summary_path) if data_summary_path is not None else None
        write_model_card(
            card_path,
            train=train_record,
            evaluation=record,
            data=read_record(summary) if summary is not None and summary.is_file() else None,
            # Absolute: the card's snippet and commands work wherever they are pasted (the
            # study may have run in another folder, e.g. snakemake --directory .test).
            folder=str(Path(model_dir).resolve()),
            run_dir=str(Path(model_dir).resolve().parent),
        )
    elif card_path is not None:
        write_unfinished_card(card_path, train=train_record, status=status, reason=reason)
    write_json(record_path, record)
    if attempt_path is not None:
        # A run that did not train passes its status on: evaluating it again gives the
        # same record, and a retrained run reaches this job through its new train.json.
        write_attempt(
            attempt_path,
            status=status,
            retry_marker=retry_marker,
            finished_at=record["provenance"]["finished_at"],
            retry=train_record["status"] == Status.OK,
        )
    return record


def select_settings_job(
    *, trial_records: Sequence[Path], grid: Mapping[str, Mapping[str, Any]], summary_path: Path, selected_path: Path
) -> dict[str, Any]:
    """Choose each tuned strategy's settings from its trials' validation scores
    (ftcompare.tuning.select); `grid` maps "strategy/trial" to the trial's values."""
    import pandas as pd

    from ftcompare.tuning import Trial, select, trial_result

    results, where = [], {"task": None, "model": None}
    for path in trial_records:
        record = read_record(path, kind="train")
        where = {key: record["config"].get(key) for key in where}  # one cell's trials
        values = grid[f"{record['strategy']}/{record['trial']}"]
        results.append(trial_result(record, Trial(strategy=record["strategy"], values=dict(values))))
    keys = list(dict.fromkeys(key for result in results for key in result.values))
    rows = [
        {
            **where,
            "strategy": r.strategy,
            "trial": r.trial,
            **{key: r.values.get(key) for key in keys},
            "seed": r.seed,
            "status": r.status,
            "metric": r.metric,
            "val_score": r.val_score,
            "val_accuracy": r.val_accuracy,
            "val_loss": r.val_loss,
            "train_time_s": r.train_time_s,
        }
        for r in results
    ]
    Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        rows,
        columns=[
            "task",
            "model",
            "strategy",
            "trial",
            *keys,
            "seed",
            "status",
            "metric",  # the task's primary metric, which val_score is and the choice was made on
            "val_score",
            "val_accuracy",
            "val_loss",
            "train_time_s",
        ],
    ).to_csv(summary_path, index=False)
    selected = select(results)
    write_selection(selected_path, selected)
    for strategy, choice in selected.items():
        log.info("%s: %s", strategy, choice)
    return selected


def _load_from(spec: RunSpec, base_model_dir: Path | None) -> RunSpec:
    return spec if base_model_dir is None else dataclasses.replace(spec, model_name_or_path=str(base_model_dir))


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
    as HTML for the HTML report's landing page (ftcompare.report_page). What an earlier, larger
    study left of these and this one no longer produces goes (remove_stale_report_outputs)."""
    from ftcompare.figures import ACROSS_FIGURE_CAPTIONS, plot_across_tasks, plot_figures
    from ftcompare.report import render_study_markdown
    from ftcompare.report_page import write_report_page
    from ftcompare.stats import DEFAULT_EQUIVALENCE_MARGIN
    from ftcompare.study import task_unit
    from ftcompare.tables import Study, across_tasks, write_summary_csv

    def listed(value: Path | Sequence[Path] | None) -> list[Path]:
        return [] if value is None else [Path(value)] if isinstance(value, (str, Path)) else [Path(v) for v in value]

    study = Study.load(
        train_paths=train_records,
        eval_paths=eval_records,
        prediction_paths=prediction_paths,
        baseline=baseline,
        tuning_summaries=listed(tuning_summary),
        selections=listed(selected),
        units={task: task_unit(task, data) for task, data in (datasets or {}).items()},
        margin=DEFAULT_EQUIVALENCE_MARGIN if equivalence_margin is None else float(equivalence_margin),
    )
    write_summary_csv(table=study.table, path=summary_path)
    write_summary_csv(table=study.comparison, path=comparison_path)
    if tuning_path is not None and study.tuning is not None:
        write_summary_csv(table=study.tuning, path=tuning_path)
    across = across_tasks(study)
    if across_path is not None:
        write_summary_csv(table=across, path=across_path)

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


def remove_stale_report_outputs(results: Path, *, figure_paths: Sequence[Path], across_path: Path | None) -> list[Path]:
    """Remove what the report job wrote for an earlier study and this one does not produce:
    the across-task table where the study has one cell, and under results/figures/ every
    figure of the report's names that is not among `figure_paths` (a cell, or the tuning, that
    is gone), then the folders left empty. Nothing else: runs, tuning and caches are other
    jobs'. Returns what it removed."""
    from ftcompare.captions import ACROSS_TABLE, FIGURE_CAPTIONS

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
