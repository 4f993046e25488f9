"""Tests for ftcompare.report.figures: every declared figure is drawn, with or without successful runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from records import all_failed_runs, many_methods_runs, mixed_runs

from ftcompare.contract import figure_names
from ftcompare.report import Results, grouped_order, plot_figures
from ftcompare.report.figures import _pareto_mask

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def mixed(tmp_path: Path):
    return mixed_runs(tmp_path / "runs")


@pytest.fixture()
def all_failed(tmp_path: Path):
    return all_failed_runs(tmp_path / "runs")


def test_pareto_mask() -> None:
    # (memory, accuracy): b dominates c (less memory, more accuracy); a and b trade off.
    mask = _pareto_mask(np.array([1.0, 2.0, 3.0, 2.0]), np.array([0.90, 0.95, 0.93, 0.95]))
    assert mask.tolist() == [True, True, False, True]


def declared(out_dir: Path) -> list[Path]:
    """The figure paths as the report rule declares them."""
    return [out_dir / f"{name}.png" for name in figure_names(tuning=False)]


def assert_pngs(paths: dict[str, Path], out_dir: Path) -> None:
    assert set(paths) == set(figure_names(tuning=False))
    for name, path in paths.items():
        assert path == out_dir / f"{name}.png"
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE), name


def test_every_figure_written(mixed, tmp_path: Path) -> None:
    out_dir = tmp_path / "figures"
    assert_pngs(plot_figures(results=Results.of(mixed), paths=declared(out_dir)), out_dir)


def test_every_figure_written_when_all_failed(all_failed, tmp_path: Path) -> None:
    out_dir = tmp_path / "figures"
    assert_pngs(plot_figures(results=Results.of(all_failed), paths=declared(out_dir)), out_dir)


def test_figure_paths_must_match_the_names(mixed, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one per figure name"):
        plot_figures(results=Results.of(mixed), paths=declared(tmp_path)[:-1])


def test_fifteen_and_more_strategies_are_grouped_by_family_and_sorted(tmp_path: Path) -> None:
    results = Results.of(many_methods_runs(tmp_path / "runs"))
    out_dir = tmp_path / "figures"
    assert_pngs(plot_figures(results=results, paths=declared(out_dir)), out_dir)
    ordered = grouped_order(results.agg, "accuracy_mean", descending=True)
    families = list(dict.fromkeys(ordered["family"]))
    assert families == [
        "full fine-tuning",
        "selective",
        "low-rank",
        "rescaling and rotation",
        "virtual tokens",
    ]  # config.FAMILIES order; each family once, its strategies together
    for family in families:
        accuracies = ordered[ordered["family"] == family]["accuracy_mean"].tolist()
        assert accuracies == sorted(accuracies, reverse=True), family


def test_figures_across_tasks_written(tmp_path: Path) -> None:
    from records import write_study

    from ftcompare.contract import ACROSS_FIGURE_CAPTIONS
    from ftcompare.report import StudyResults, across_tasks, plot_across_tasks

    train_paths, eval_paths, prediction_paths = write_study(tmp_path / "runs")
    study = StudyResults.load(
        train_paths=train_paths, eval_paths=eval_paths, prediction_paths=prediction_paths, baseline="full"
    )
    paths = [tmp_path / "figures" / f"{name}.png" for name in ACROSS_FIGURE_CAPTIONS]
    drawn = plot_across_tasks(
        across=across_tasks(study), tasks=study.tasks, metrics={"sst2": "accuracy", "rte": "accuracy"}, paths=paths
    )
    assert sorted(drawn) == ["tasks_heatmap", "tasks_ranks"]
    for path in paths:
        data = path.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE), path
    with pytest.raises(ValueError, match="one per name"):
        plot_across_tasks(across=across_tasks(study), tasks=study.tasks, metrics={}, paths=paths[:1])


def test_pareto_mask_leaves_out_what_did_not_learn() -> None:
    # The cheapest point dominates the others, but it learned nothing: never on the frontier,
    # and it dominates nothing.
    x, y = np.array([1.0, 2.0, 3.0]), np.array([90.0, 85.0, 88.0])
    assert _pareto_mask(x, y).tolist() == [True, False, False]
    assert _pareto_mask(x, y, np.array([False, True, True])).tolist() == [False, True, True]


def test_a_task_where_nothing_learned_is_grey_in_the_heatmap_and_off_the_frontier(tmp_path: Path) -> None:
    from records import all_majority_study

    from ftcompare.report import across_tasks, heatmap_data, plot_across_tasks

    study = all_majority_study(tmp_path / "runs")
    across = across_tasks(study)
    values, shades = heatmap_data(across, study.tasks, "roberta-base")
    assert shades["agnews"].isna().all() and values["agnews"].notna().all()  # shown, not coloured
    # Each task on its own scale: sst2's best is 1, its worst 0, whatever the other task's scores.
    assert shades["sst2"].tolist() == [1.0, pytest.approx(shades["sst2"]["lora"]), 0.0]
    results = study.cells[("agnews", "roberta-base")]
    assert results.agg["did_not_learn"].all()
    paths = [tmp_path / "figures" / "agnews" / f"{name}.png" for name in figure_names(tuning=False)]
    assert_pngs(plot_figures(results=results, paths=paths), tmp_path / "figures" / "agnews")
    across_paths = [tmp_path / "figures" / f"{name}.png" for name in ("tasks_heatmap", "tasks_ranks")]
    metrics = {"sst2": "accuracy", "agnews": "macro_f1"}
    for path in plot_across_tasks(across=across, tasks=study.tasks, metrics=metrics, paths=across_paths).values():
        assert path.read_bytes().startswith(b"\x89PNG")


def test_a_loss_series_of_one_point_is_drawn_as_a_marker(tmp_path: Path, monkeypatch) -> None:
    from records import train_record, write_records

    from ftcompare.report import figures, load_runs

    one = train_record("lora", 0)
    one["loss_curve"] = one["loss_curve"][:1]  # a run that logged a single point
    pairs = [(train_record("full", 0), eval_record_ok("full")), (one, eval_record_ok("lora"))]
    runs = load_runs(**dict(zip(("train_paths", "eval_paths"), write_records(tmp_path / "runs", pairs))))
    drawn = {}

    def keep(fig, path):
        drawn[Path(path).stem] = fig
        return Path(path)

    monkeypatch.setattr(figures, "_save", keep)
    plot_figures(results=Results.of(runs), paths=declared(tmp_path / "figures"))
    loss_axes = [ax for ax in drawn["loss_curves"].axes if ax.get_ylabel() == "Training loss"]
    markers = {
        line.get_label(): (len(line.get_xdata()), line.get_marker()) for ax in loss_axes for line in ax.get_lines()
    }
    assert markers["lora seed 0"] == (1, "o")
    assert markers["full seed 0"] == (2, "None")


def eval_record_ok(strategy: str):
    from records import eval_record

    return eval_record(strategy, 0)
