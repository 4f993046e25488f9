"""End-to-end Snakemake runs in a temporary folder, and what a config edit reruns.

One real run of the whole study (tiny random RoBERTa, all four strategies plus a
deliberately broken one, on the committed IMDB sample) is shared by the tests of this module;
the rerun tests ask Snakemake for its plan (dry runs) after an edit. What each edit reruns
and what fails fast is the plan's, tested without Snakemake in tests/plan/test_graph.py;
here a few runs prove that the rules ask it.
"""

from __future__ import annotations

import ast
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from specs import cell_runs, run_snippets
from workflow_runs import (
    REPO_ROOT,
    overlay,
    planned_jobs,
    slurm_command,
    snakemake,
    tiny_study,
)

from ftcompare.contract import study_folder
from ftcompare.plan import StudyPlan, load_config
from ftcompare.use import cli, render, study_rows

pytestmark = pytest.mark.e2e


# CI sets this so that a missing browser fails the HTML report's test instead of skipping it.
REQUIRE_BROWSER = "FTCOMPARE_REQUIRE_BROWSER"


@pytest.fixture(scope="module")
def study(tmp_path_factory, imdb_sample, tiny_roberta):
    workdir = tmp_path_factory.mktemp("study")
    base = overlay(
        workdir,
        "study",
        {
            **tiny_study(imdb_sample, tiny_roberta),
            # Added to the four strategies of config.yaml; at this rate without clipping
            # its loss becomes NaN: the study must finish and report it as failed.
            "strategies": {"broken": {"method": "full", "learning_rate": 1000.0, "max_grad_norm": None}},
            "tuning": {"enabled": False},  # tuning_study below tunes
        },
    )
    result = snakemake(workdir, base)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, base


def test_study_produces_summary_figures_and_report(study):
    workdir, _ = study
    summary = pd.read_csv(workdir / "results" / "summary.csv")
    assert list(summary["strategy"]) == ["full", "lora", "qlora", "ia3", "broken"]
    statuses = dict(zip(summary["strategy"], summary["status"]))
    assert statuses == {"full": "ok", "lora": "ok", "qlora": "ok", "ia3": "ok", "broken": "failed"}
    assert "diverged: training loss became" in summary.set_index("strategy").loc["broken", "reason"]
    ok = summary[summary["status"] == "ok"]
    assert ok["accuracy"].between(0, 1).all() and (ok["accuracy_ci_low"] < ok["accuracy_ci_high"]).all()
    assert (ok["trainable_params"] < ok["total_params"]).sum() == 3  # every strategy but full

    for name in ("accuracy", "train_time", "trainable_params", "peak_memory", "pareto", "loss_curves"):
        assert (workdir / "results" / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (workdir / "results" / "report.md").read_text()
    assert "](figures/accuracy.png)" in report
    assert re.search(r"`broken` seed 0: \*\*failed\*\*: diverged: training loss became (NaN|infinite)", report)

    run = cell_runs(workdir) / "lora" / "seed0"
    predictions = pd.read_parquet(run / "predictions.parquet")
    assert len(predictions) == 200
    assert predictions[["prob_0", "prob_1"]].sum(axis=1).round(5).eq(1).all()
    record = json.loads((run / "train.json").read_text())
    assert record["config"]["learning_rate"] == 5.0e-4
    assert record["provenance"]["packages"]["transformers"]
    assert "git_commit" in record["provenance"] and record["provenance"]["device_type"] == "cpu"
    assert (run / "model" / "adapter_model.safetensors").is_file()
    # What each run costs to apply, in summary.csv and the report; merged where a merge exists.
    by_strategy = ok.set_index("strategy")
    assert (by_strategy["latency_p50_ms"] > 0).all() and (
        by_strategy["latency_p95_ms"] >= by_strategy["latency_p50_ms"]
    ).all()
    assert by_strategy["merged_eval_reviews_per_s"].notna().tolist() == [False, True, True, True]  # not for full
    assert (by_strategy.loc[["lora", "qlora", "ia3"], "merged_agreement"] == 1.0).all()  # fp32 on a CPU
    assert "## Inference cost" in report and "`qlora` (4-bit base) labels" in report
    # The model card: the strategy, the data, the test accuracy with its interval, how to load it.
    card = (run / "README.md").read_text()
    eval_metrics = json.loads((run / "eval.json").read_text())["metrics"]
    assert f"{100 * eval_metrics['accuracy']:.2f}% (95% CI {100 * eval_metrics['accuracy_ci_low']:.2f}%" in card
    assert (
        "LoRA: r 8, alpha 16, dropout 0.1, on query, value" in card and "AutoPeftModelForSequenceClassification" in card
    )
    assert "300 training" not in card and "240 training, 60 validation" in card
    cell = cell_runs(workdir).relative_to(workdir / "results" / "runs")  # <task>/<model>
    assert not (workdir / "results" / "checkpoints" / cell / "lora").exists()
    assert (workdir / "results" / "logs" / "finetune" / cell / "lora_seed0.log").stat().st_size > 0
    assert (workdir / "results" / "benchmarks" / "finetune" / cell / "lora_seed0.tsv").is_file()


# --- using what was trained -------------------------------------------------------------------

STRATEGIES = ["full", "lora", "qlora", "ia3"]


def prepared_test_split(run: Path) -> Path:
    """The prepared test split a run was evaluated on: its rows are predictions.parquet's."""
    workdir = study_folder(run)
    tokenized = workdir / json.loads((run / "train.json").read_text())["tokenized_dir"]
    return workdir / json.loads((tokenized / "tokenization.json").read_text())["data"] / "test.parquet"


def assert_probabilities_equal(got: pd.DataFrame, expected: pd.DataFrame, atol: float) -> None:
    columns = [c for c in expected.columns if c.startswith("prob_")]
    np.testing.assert_allclose(got[columns].to_numpy(), expected[columns].to_numpy(), atol=atol, rtol=0)


def test_status_and_tensorboard_show_the_finished_study(study):
    workdir, base = study
    results = workdir / "results"
    rows = {row.strategy: row for row in study_rows(results)}
    assert {s: r.status for s, r in rows.items()} == {
        "full": "ok",
        "lora": "ok",
        "qlora": "ok",
        "ia3": "ok",
        "broken": "failed",
    }
    assert rows["broken"].reason.startswith("diverged: training loss became")
    for strategy in ("full", "lora", "qlora", "ia3"):
        evaluation = json.loads((cell_runs(results.parent) / strategy / "seed0" / "eval.json").read_text())
        assert rows[strategy].test_score == evaluation["metrics"]["accuracy"]
        cell = cell_runs(workdir).relative_to(results / "runs")  # <task>/<model>
        assert list((results / "tensorboard" / cell / strategy / "seed0").glob("events.out.tfevents.*"))
    assert render(list(rows.values())).splitlines()[-1] == "5 jobs: 4 ok, 1 failed; study ETA 0:00:00"
    # The events are a side product: switching them off reruns nothing.
    off = overlay(workdir, "no-tensorboard", {"monitoring": {"tensorboard": False}})
    assert planned_jobs(workdir, base, off) == {}


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if os.environ.get(REQUIRE_BROWSER):
            pytest.fail(f"no Chromium here, and {REQUIRE_BROWSER} is set (apt-get install chromium)")
        pytest.skip("no Chromium here (apt-get install chromium)")
    return found


def opening_paragraph(markdown: str) -> str:
    """report.md's first paragraph under its title, as a reader sees it (no Markdown marks)."""
    paragraph = next(block for block in markdown.split("\n\n")[1:] if not block.startswith(("#", "|", "!")))
    return " ".join(re.sub(r"\*\*|`", "", paragraph).split())


def page_text(dom: str) -> str:
    """The words of a drawn page: scripts and styles dropped, inline tags joined, others a space,
    entities decoded, whitespace folded."""
    shown = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    inline = re.sub(r"</?(?:code|strong|em|a|span)\b[^>]*>", "", shown)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inline)).split())


@pytest.mark.browser
def test_the_html_report_opens_with_report_md_and_groups_by_task_model_strategy(study, tmp_path):
    workdir, base = study
    report_html = tmp_path / "report.html"
    result = snakemake(workdir, base, args=("--report", str(report_html)))
    assert result.returncode == 0, result.stderr[-3000:]
    browser = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000"]

    def render(page: Path) -> str:
        """The page as drawn by its scripts (the report is a React app), and its first screen."""
        shot = page.with_suffix(".png")
        subprocess.run([*browser, f"--screenshot={shot}", "--window-size=1400,1000", page.as_uri()], timeout=300)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        return subprocess.run(
            [*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=300
        ).stdout

    # The landing page: report.md as text, whatever it says, its tables drawn, no Markdown marks.
    first = render(report_html)
    landing = first[first.index('class="ftcompare-report"') :]
    report_md = (workdir / "results" / "report.md").read_text()
    assert opening_paragraph(report_md) in page_text(landing)
    assert "<table>" in landing and "<td>lora</td>" in landing
    assert "**" not in page_text(first) and "`" not in page_text(landing)
    assert "5 strategies (full, lora, qlora, ia3, broken)" in page_text(first)  # the study, below it
    # The results of the task and the model (their names in the study): a table with a
    # strategy, seed and item column, one row per record, drawn cells (">...<") rather than
    # the data the page carries.
    task, model = cell_runs(workdir).parts[-2:]
    page = report_html.read_text()
    at = page.rindex("</body>")
    show = f"app.setView({{navbarMode: 'subcategory', category: {json.dumps(task)}, subcategory: {json.dumps(model)}}})"
    results = tmp_path / "results.html"
    results.write_text(f"{page[:at]}<script>setTimeout(() => {show}, 500);</script>{page[at:]}")
    drawn = render(results)
    assert ">strategy<" in drawn and ">seed<" in drawn and ">item<" in drawn
    assert drawn.count(">training record<") == drawn.count(">test record<") == 5
    assert all(f">{strategy}<" in drawn for strategy in ("full", "lora", "qlora", "ia3", "broken", "all"))
    assert ">written comparison<" in drawn
    # Each figure labelled with its task and model: no two alike.
    figures = re.findall(r">(figure: [^<]+)<", drawn)
    assert f"figure: accuracy ({task}, {model})" in figures and len(figures) == len(set(figures)) >= 6


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_predict_on_the_test_split_reproduces_the_runs_predictions(study, tmp_path, strategy):
    workdir, _ = study
    run = cell_runs(workdir) / strategy / "seed0"
    out = tmp_path / "predictions.parquet"
    assert cli.main(["predict", str(run), "--input", str(prepared_test_split(run)), "--output", str(out)]) == 0
    got, expected = pd.read_parquet(out), pd.read_parquet(run / "predictions.parquet")
    # The study's data name no classes: predictions are the classes' numbers.
    assert list(got.columns) == ["row", "prediction", "prob_0", "prob_1"] and len(got) == 200
    assert got["row"].tolist() == expected["row"].tolist()
    assert got["prediction"].tolist() == expected["prediction"].tolist()
    assert_probabilities_equal(got, expected, atol=1e-6)


def test_predict_reads_standard_input_text_and_csv_files(study, tmp_path):
    workdir, _ = study
    run = cell_runs(workdir) / "lora" / "seed0"
    texts = pd.read_parquet(prepared_test_split(run))["text"]
    single_line = texts[~texts.str.contains("\n")].head(30)  # one review a line
    expected = pd.read_parquet(run / "predictions.parquet").loc[single_line.index].reset_index(drop=True)
    # Standard input, through the command as installed (python -m ftcompare runs ftcompare.use.cli:main).
    proc = subprocess.run(
        [sys.executable, "-m", "ftcompare", "predict", str(run), "--input", "-"],
        input="\n".join(single_line) + "\n",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from_stdin = pd.read_csv(__import__("io").StringIO(proc.stdout))
    # Other reviews beside them: other batches, other padding, the same numbers to float rounding.
    assert from_stdin["prediction"].tolist() == expected["prediction"].tolist()
    assert_probabilities_equal(from_stdin, expected, atol=1e-5)
    (tmp_path / "reviews.txt").write_text("\n".join(single_line))
    single_line.rename("review").to_frame().to_csv(tmp_path / "reviews.csv", index=False)
    for source, extra in (("reviews.txt", []), ("reviews.csv", ["--text-column", "review"])):
        out = tmp_path / f"{source}.csv"
        assert cli.main(["predict", str(run), "--input", str(tmp_path / source), *extra, "--output", str(out)]) == 0
        pd.testing.assert_frame_equal(pd.read_csv(out), from_stdin)


# Loads the exported model with transformers alone: PEFT and bitsandbytes cannot be imported.
PIPELINE_WITHOUT_PEFT = """
import json, sys
sys.modules["peft"] = None
sys.modules["bitsandbytes"] = None
import transformers
from transformers import pipeline
assert not transformers.utils.is_peft_available()
texts = json.load(open(sys.argv[2]))
scores = pipeline("text-classification", model=sys.argv[1])(texts, truncation=True, top_k=None)
print(json.dumps([{s["label"]: s["score"] for s in row} for row in scores]))
"""


@pytest.mark.parametrize("strategy", ["lora", "ia3", "qlora"])
def test_a_merged_export_loads_in_a_pipeline_without_peft_and_predicts_as_the_adapter(study, tmp_path, strategy):
    workdir, _ = study
    run = cell_runs(workdir) / strategy / "seed0"
    out = tmp_path / "merged"
    assert cli.main(["export", str(run), "--merged", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert "merged into" in (out / "README.md").read_text()
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(pd.read_parquet(prepared_test_split(run))["text"].tolist()))
    proc = subprocess.run(
        [sys.executable, "-c", PIPELINE_WITHOUT_PEFT, str(out), str(texts)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = pd.DataFrame(json.loads(proc.stdout.splitlines()[-1])).rename(columns=lambda label: f"prob_{label}")
    expected = pd.read_parquet(run / "predictions.parquet")
    # One review at a time, unpadded, against the adapter's length-sorted padded batches.
    assert_probabilities_equal(scores, expected, atol=1e-5)
    assert (scores[["prob_0", "prob_1"]].to_numpy().argmax(axis=1) == expected["prediction"]).all()


def test_exporting_a_full_fine_tune_points_at_its_folder(study, tmp_path, capsys):
    workdir, _ = study
    run = cell_runs(workdir) / "full" / "seed0"
    assert cli.main(["export", str(run), "--merged", str(tmp_path / "merged")]) == 2
    assert "already holds a plain transformers model" in capsys.readouterr().err
    assert not (tmp_path / "merged").exists()


def snippet_probabilities(output: str, adapter: bool) -> list[list[float]]:
    """The class probabilities a loading snippet printed for each example review."""
    if not adapter:  # the pipeline's answer: one list of {label, score} per review
        rows = ast.literal_eval(output.strip().splitlines()[-1])
        return [[s["score"] for s in sorted(row, key=lambda s: int(s["label"]))] for row in rows]
    return [ast.literal_eval(line[line.index("[") : line.index("]") + 1]) for line in output.strip().splitlines()[-2:]]


def test_each_model_cards_loading_snippet_runs_and_loads_the_trained_head(study):
    from ftcompare.evaluate import EXAMPLE_REVIEWS
    from ftcompare.use import runs as trained

    workdir, _ = study
    snippets = {}
    for strategy in STRATEGIES:
        run = cell_runs(workdir) / strategy / "seed0"
        snippets[strategy] = (run / "README.md").read_text().split("```python\n")[1].split("```")[0]
        # By absolute path: the snippet works pasted from any folder (they run elsewhere).
        assert f'"{run.resolve().as_posix()}/model"' in snippets[strategy]
    printed = run_snippets(snippets, cwd=workdir.parent)
    for strategy in STRATEGIES:
        # The trained head, not a fresh one: what ftcompare predict says for the same reviews.
        run = cell_runs(workdir) / strategy / "seed0"
        expected = trained.predict(trained.open_run(run), list(EXAMPLE_REVIEWS))
        got = snippet_probabilities(printed[strategy], adapter=strategy != "full")
        np.testing.assert_allclose(got, expected[["prob_0", "prob_1"]].to_numpy(), atol=1e-4, err_msg=strategy)


def test_the_docs_loading_snippet_is_a_cards_and_runs(study):
    from ftcompare.evaluate import load_snippet

    workdir, _ = study
    page = (REPO_ROOT / "docs" / "using-a-run.md").read_text()
    block = page.split("<!-- snippet: load-adapter -->\n```python\n")[1].split("```")[0]
    documented = "results/runs/imdb/roberta-base/lora/seed0"
    assert block.strip() == load_snippet(f"{documented}/model", adapter=True)
    block = block.replace(documented, (cell_runs(workdir) / "lora" / "seed0").relative_to(workdir).as_posix())
    proc = subprocess.run([sys.executable, "-c", block], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line.split()[0] for line in proc.stdout.strip().splitlines()[-2:]] in (
        [a, b] for a in ("0", "1") for b in ("0", "1")
    )


def test_a_plain_rerun_does_not_retrain_a_diverged_run(study):
    # The same settings diverge the same way; a settings change reruns it (fixed_study).
    workdir, base = study
    assert planned_jobs(workdir, base) == {}


@pytest.fixture(scope="module")
def fixed_study(study):
    """The study after fixing the broken strategy's config: (workdir, configs, plan before the fix)."""
    workdir, base = study
    fixed = overlay(workdir, "fixed", {"strategies": {"broken": {"learning_rate": 2.0e-5, "max_grad_norm": 1.0}}})
    plan = planned_jobs(workdir, base, fixed)
    result = snakemake(workdir, base, fixed)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, (base, fixed), plan


def test_fixing_the_failed_run_runs_it_alone_then_nothing_is_left(fixed_study):
    workdir, configs, plan_before_fix = fixed_study
    assert plan_before_fix == {"finetune": 1, "evaluate": 1, "report": 1, "all": 1}
    summary = pd.read_csv(workdir / "results" / "summary.csv")
    assert set(summary["status"]) == {"ok"}
    assert planned_jobs(workdir, *configs) == {}  # a second run does nothing


def test_snakemake_plans_the_jobs_the_plan_counts_for_the_glue_overlay(tmp_path):
    """The rules ask the plan (tests/plan/test_graph.py says what it plans): on config/glue.yaml,
    hub sources fetched and tuning included, Snakemake plans without the network exactly
    the plan's jobs."""
    plan = StudyPlan.from_config(load_config(REPO_ROOT / "config" / "glue.yaml"))
    assert planned_jobs(tmp_path, REPO_ROOT / "config" / "glue.yaml") == plan.job_counts()


def test_config_edit_reruns_exactly_what_it_touches(fixed_study):
    """One strategy's learning rate: that strategy's run, its evaluation, the report (every
    other edit: tests/plan/test_graph.py, on the plan's job params)."""
    workdir, configs, _ = fixed_study
    edited = overlay(workdir, "edit", {"strategies": {"lora": {"learning_rate": 1.0e-3}}})
    assert planned_jobs(workdir, *configs, edited) == {"finetune": 1, "evaluate": 1, "report": 1, "all": 1}


def test_bad_config_fails_fast_and_deletes_nothing(study):
    """A config the plan refuses (tests/plan/test_graph.py: every named error) stops Snakemake
    before any job, with the plan's message, and touches no file."""
    workdir, base = study
    before = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*") if p.is_file()}
    result = snakemake(workdir, base, overlay(workdir, "bad", {"strategies": {"lorra": {}}}))
    assert result.returncode != 0
    assert "unknown strategy 'lorra'" in result.stderr + result.stdout
    after = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*") if p.is_file()}
    assert after == before


def test_slurm_profile_dry_run(fixed_study):
    """The cluster profile parses and plans the edited study's new runs (a dry run needs no sbatch)."""
    workdir, configs, _ = fixed_study
    edited = overlay(workdir, "slurm-edit", {"seeds": [0, 1]})
    command = slurm_command(
        workdir,
        "--dry-run",
        "--configfile",
        str(REPO_ROOT / "config" / "config.yaml"),
        *map(str, configs),
        str(edited),
    )
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^finetune\s+5\s*$", result.stdout, flags=re.M), result.stdout[-2000:]


def test_failed_evaluation_is_retried_alone(fixed_study):
    """What a failed evaluation (e.g. out of memory) leaves behind makes the next plain run retry it."""
    workdir, configs, _ = fixed_study
    attempt = cell_runs(workdir) / "lora" / "seed0" / "eval-attempt.json"
    ok_attempt = attempt.read_text()
    assert json.loads(ok_attempt)["status"] == "ok"
    attempt.write_text(json.dumps({**json.loads(ok_attempt), "status": "failed"}))
    try:
        assert planned_jobs(workdir, *configs) == {"evaluate": 1, "report": 1, "all": 1}
    finally:
        attempt.write_text(ok_attempt)
    assert planned_jobs(workdir, *configs) == {}


# --- a failed edit costs nothing -----------------------------------------------------------


def bad_data(folder: Path, imdb_sample: Path, case: str) -> dict:
    """An overlay pointing data.train at a broken copy of the 1k file."""
    train = pd.read_parquet(imdb_sample / "train.parquet")
    path = folder / f"{case}.parquet"
    if case == "string-labels":
        train["label"] = train["label"].map({0: "neg", 1: "pos"})
    elif case == "parquet-corrupt-mid-file":
        import pyarrow.parquet as pq

        train.to_parquet(path, index=False)
        meta = pq.ParquetFile(path).metadata.row_group(0)
        texts = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == "text")
        start = texts.dictionary_page_offset or texts.data_page_offset  # the texts sit in the dictionary page
        middle = start + texts.total_compressed_size // 2
        content = bytearray(path.read_bytes())
        content[middle : middle + 4096] = bytes(4096)  # the text pages: metadata, labels and statistics intact
        path.write_bytes(bytes(content))
        return {"data": {"train": str(path)}}
    train.to_parquet(path, index=False)
    return {"data": {"train": str(path)}}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        # One bad input the plan's checks refuse before any job; each such check has its unit
        # test (test_preflight.py's test_preflight_*, test_splits.py), this one the glue.
        ("string-labels", "map the class names to numbers, e.g. {'neg': 0, 'pos': 1}"),
        # Caught only by the prepare_data job: its outputs go elsewhere, so they cost nothing either.
        ("parquet-corrupt-mid-file", "Error in rule prepare_data"),
        # Caught by the local fetch_model rule, before any job.
        ("model-hub-id-offline", "model.name_or_path = 'no-such-org/no-such-model': cannot download it"),
    ],
)
def test_a_failed_edit_leaves_finished_work_alone(fixed_study, imdb_sample, case, message):
    workdir, configs, _ = fixed_study
    assert planned_jobs(workdir, *configs) == {}
    if case == "model-hub-id-offline":
        edit = {"model": {"name_or_path": "no-such-org/no-such-model"}}  # HF_HUB_OFFLINE=1: the download fails
    else:
        edit = bad_data(workdir, imdb_sample, case)
    before = {p: p.stat().st_mtime_ns for p in (workdir / "results" / "runs").rglob("*") if p.is_file()}
    result = snakemake(workdir, *configs, overlay(workdir, "bad-edit", edit))
    assert result.returncode != 0
    assert message in result.stdout + result.stderr, (result.stdout + result.stderr)[-3000:]
    # The config is restored: nothing to do, nothing touched.
    assert planned_jobs(workdir, *configs) == {}
    assert {p: p.stat().st_mtime_ns for p in (workdir / "results" / "runs").rglob("*") if p.is_file()} == before
