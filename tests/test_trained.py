"""Tests for ftcompare.trained and ftcompare.cli without a study: reading the inputs, the
outputs, and the errors for runs and inputs the commands cannot use. The commands on a
real study's runs are tested in test_workflow.py."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from specs import make_spec

from ftcompare import cli, trained
from ftcompare.trained import UsageError, read_texts

REPO_ROOT = Path(__file__).resolve().parents[1]
REVIEWS = ["Great fun.", "Awful, just awful.", "A line\u2028with a line separator inside, and a \x85 too."]


def stdin_of(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))


# --- every input format ---------------------------------------------------------------------


def test_plain_text_is_one_review_a_line(tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_bytes(("\r\n".join(REVIEWS) + "\r\n").encode())  # Windows line ends, a final newline
    assert read_texts(str(path)) == REVIEWS


def test_standard_input_is_plain_text_unless_told(monkeypatch):
    stdin_of(monkeypatch, ("\n".join(REVIEWS)).encode())  # no final newline
    assert read_texts("-") == REVIEWS
    stdin_of(monkeypatch, pd.DataFrame({"review": REVIEWS}).to_csv(index=False).encode())
    assert read_texts("-", fmt="csv", column="review") == REVIEWS
    buffer = io.BytesIO()
    pd.DataFrame({"text": REVIEWS}).to_parquet(buffer, index=False)
    stdin_of(monkeypatch, buffer.getvalue())
    assert read_texts("-", fmt="parquet") == REVIEWS


def test_csv_and_parquet_by_extension_with_a_chosen_column(tmp_path):
    frame = pd.DataFrame({"id": [7, 8, 9], "body": REVIEWS})
    frame.to_csv(tmp_path / "in.csv", index=False, encoding="utf-8-sig")  # Excel's byte-order mark
    frame.to_parquet(tmp_path / "in.parquet", index=False)
    assert read_texts(str(tmp_path / "in.csv"), column="body") == REVIEWS
    assert read_texts(str(tmp_path / "in.parquet"), column="body") == REVIEWS


# --- clear errors -------------------------------------------------------------------------------


def usage_error(*args, **kwargs) -> str:
    with pytest.raises(UsageError) as info:
        read_texts(*args, **kwargs)
    return str(info.value)


def test_a_missing_column_names_the_columns_there_are(tmp_path):
    pd.DataFrame({"review": REVIEWS}).to_parquet(tmp_path / "in.parquet", index=False)
    message = usage_error(str(tmp_path / "in.parquet"))
    assert message == (
        f"--input {str(tmp_path / 'in.parquet')!r} has no column 'text'; its columns are ['review']: "
        "choose one with --text-column"
    )


@pytest.mark.parametrize("fmt", ["text", "csv", "parquet"])
def test_an_empty_input_is_an_error(tmp_path, fmt):
    path = tmp_path / f"empty.{'txt' if fmt == 'text' else fmt}"
    if fmt == "text":
        path.write_text("")
    elif fmt == "csv":
        path.write_text("text\n")
    else:
        pd.DataFrame({"text": pd.Series([], dtype=str)}).to_parquet(path)
    assert "holds no reviews: nothing to predict" in usage_error(str(path))


def test_empty_reviews_and_foreign_bytes_are_named_by_line(tmp_path, monkeypatch):
    stdin_of(monkeypatch, b"good\n\nbad\n   \n")
    assert usage_error("-") == (
        "standard input: line 2 is empty (2 empty in all); every line is one review: remove the empty ones or give "
        "them text"
    )
    (tmp_path / "latin1.txt").write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    assert "is not UTF-8: byte 0xe9 on line 2" in usage_error(str(tmp_path / "latin1.txt"))
    pd.DataFrame({"text": ["ok", None]}).to_parquet(tmp_path / "null.parquet")
    assert "column 'text': row 1 has no text (null; 1 such in all)" in usage_error(str(tmp_path / "null.parquet"))
    pd.DataFrame({"text": [3, 4]}).to_parquet(tmp_path / "number.parquet")
    assert "row 0 holds 3, not text (2 such)" in usage_error(str(tmp_path / "number.parquet"))
    assert usage_error(str(tmp_path / "nope.csv")) == f"--input {str(tmp_path / 'nope.csv')!r} does not exist"


def test_an_output_must_be_csv_or_parquet():
    with pytest.raises(UsageError, match=r"--output 'out.json': give a file ending in .csv or .parquet"):
        trained.output_format("out.json")


def run_folder(tmp_path: Path, *, train_status="ok", eval_status="ok", with_tokenizer=True) -> Path:
    """A run folder's records and model folder files, enough for open_run's checks."""
    run = tmp_path / "results" / "runs" / "lora" / "seed0"
    (run / "model").mkdir(parents=True)
    for kind, status in (("train", train_status), ("eval", eval_status)):
        record = {"kind": kind, "status": status, "reason": None if status == "ok" else "CUDA out of memory"}
        if kind == "train":
            record["config"] = make_spec(run / "base", "lora").to_dict()
        (run / f"{kind}.json").write_text(json.dumps(record))
    (run / "model" / "config.json").write_text(json.dumps({"id2label": {"0": "neg", "1": "pos"}}))
    if with_tokenizer:
        (run / "model" / "tokenizer.json").write_text("{}")
        (run / "model" / "tokenizer_config.json").write_text("{}")
    return run


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("train-failed", "did not finish ok: its train.json says 'failed' (CUDA out of memory)"),
        ("eval-failed", "did not finish ok: its eval.json says 'failed' (CUDA out of memory)"),
        ("no-tokenizer", "lacks ['tokenizer.json', 'tokenizer_config.json']: the run was trained before"),
        ("model-folder", "is a run's model folder; give the run folder"),
        ("no-records", "has no train.json: not a run folder"),
        ("not-a-record", "train.json is not a run record (JSON written by the workflow)"),
        ("old-record", "train.json holds no run settings this version of ftcompare reads"),
    ],
)
def test_a_run_that_cannot_be_used_is_refused_with_the_reason(tmp_path, case, message):
    run = run_folder(
        tmp_path,
        train_status="failed" if case == "train-failed" else "ok",
        eval_status="failed" if case == "eval-failed" else "ok",
        with_tokenizer=case != "no-tokenizer",
    )
    if case == "not-a-record":
        (run / "train.json").write_text("epoch,loss\n1,0.5\n")
    if case == "old-record":
        (run / "train.json").write_text(json.dumps({"status": "ok"}))
    target = {"model-folder": run / "model", "no-records": tmp_path}.get(case, run)
    with pytest.raises(UsageError, match=None) as info:
        trained.open_run(target)
    assert message in str(info.value)


def test_errors_end_the_command_with_a_message_not_a_traceback(tmp_path, capsys):
    run = run_folder(tmp_path, train_status="failed")
    assert cli.main(["predict", str(run), "--input", "-"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"ftcompare predict: error: run {str(run)!r} did not finish ok")
    assert "Traceback" not in error


def test_a_run_folder_that_is_missing_or_a_file_is_named(tmp_path):
    with pytest.raises(UsageError) as info:
        trained.open_run(tmp_path / "runs" / "lora" / "seed9")
    assert str(info.value) == (
        f"run folder {str(tmp_path / 'runs' / 'lora' / 'seed9')!r} does not exist "
        "(a run folder is e.g. results/runs/lora/seed0)"
    )
    (tmp_path / "train.json").write_text("{}")
    with pytest.raises(UsageError, match=r"'.*train.json' is a file, not a folder \(a run folder is e.g."):
        trained.open_run(tmp_path / "train.json")


def test_an_input_folder_and_a_bad_device_are_named(tmp_path):
    assert usage_error(str(tmp_path)) == f"--input {str(tmp_path)!r} is a folder, not a file"
    for text in ("gpu", "mps", "cuda:99"):
        with pytest.raises(UsageError, match=rf"--device '{text}': "):
            trained.parse_device(text)
    assert trained.parse_device("auto") is None and str(trained.parse_device("cpu")) == "cpu"


def test_a_bad_csv_column_through_the_command_names_the_columns(tmp_path, capsys):
    run = run_folder(tmp_path)
    pd.DataFrame({"review": REVIEWS}).to_csv(tmp_path / "in.csv", index=False)
    assert cli.main(["predict", str(run), "--input", str(tmp_path / "in.csv")]) == 2
    assert capsys.readouterr().err == (
        f"ftcompare predict: error: --input {str(tmp_path / 'in.csv')!r} has no column 'text'; its columns are "
        "['review']: choose one with --text-column\n"
    )


# --- the command itself -----------------------------------------------------------------------


def test_help_imports_neither_torch_nor_transformers():
    code = (
        "import sys\nfrom ftcompare.cli import main\n"
        "for argv in (['--help'], ['predict', '--help'], ['export', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit as exit:\n        assert exit.code == 0\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ftcompare predict RUN_DIR" not in proc.stdout  # argparse's own usage, not the docstring
    assert "usage: ftcompare export [-h] --merged OUT RUN_DIR" in proc.stdout


def test_the_package_installs_the_command():
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"ftcompare": "ftcompare.cli:main"}
    proc = subprocess.run([sys.executable, "-m", "ftcompare", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ftcompare")


# --- on a run trained here (the jobs the workflow runs, without Snakemake) -----------------


@pytest.fixture(scope="module")
def lora_run(tiny_roberta, tiny_tokenized, tmp_path_factory) -> Path:
    """A LoRA run folder as the workflow leaves it: train.json, eval.json, predictions.parquet, README.md, model/."""
    from ftcompare.jobs import evaluate_job, finetune_job

    study = tmp_path_factory.mktemp("study")
    run = study / "results" / "runs" / "lora" / "seed0"
    finetune_job(
        spec=make_spec(tiny_roberta, "lora"),
        tokenized_dir=tiny_tokenized,
        model_dir=run / "model",
        record_path=run / "train.json",
        checkpoint_dir=study / "results" / "checkpoints" / "lora" / "seed0",
        attempt_path=run / "train.attempt.json",
        retry_marker="first",
    )
    record = evaluate_job(
        train_record_path=run / "train.json",
        tokenized_dir=tiny_tokenized,
        model_dir=run / "model",
        record_path=run / "eval.json",
        predictions_path=run / "predictions.parquet",
        card_path=run / "README.md",
        data_summary_path=tiny_tokenized.parent / "summary.json",
    )
    assert record["status"] == "ok", record.get("reason")
    return run


def test_predict_on_the_test_split_reproduces_the_runs_predictions(lora_run, tiny_tokenized, tmp_path):
    out = tmp_path / "predictions.parquet"
    test_split = tiny_tokenized.parent / "test.parquet"
    argv = ["predict", str(lora_run), "--input", str(test_split), "--output", str(out), "--device", "cpu"]
    assert cli.main(argv) == 0
    got, expected = pd.read_parquet(out), pd.read_parquet(lora_run / "predictions.parquet")
    assert list(got.columns) == ["row", "prediction", "prob_0", "prob_1"] and len(got) == 200
    assert got["row"].tolist() == expected["row"].tolist()
    assert got["prediction"].tolist() == expected["prediction"].tolist()
    columns = ["prob_0", "prob_1"]
    assert (got[columns] - expected[columns]).abs().to_numpy().max() <= 1e-6


def test_the_run_folder_holds_its_card(lora_run):
    card = (lora_run / "README.md").read_text()
    accuracy = json.loads((lora_run / "eval.json").read_text())["metrics"]["accuracy"]
    assert f"{100 * accuracy:.2f}% (95% CI" in card
    assert "LoRA: r 8" in card and "AutoPeftModelForSequenceClassification" in card
    assert "400 training, 100 validation" in card and "200 test reviews" in card


def test_a_merged_export_predicts_as_the_adapter(lora_run, tiny_tokenized, tmp_path):
    from transformers import pipeline

    out = tmp_path / "merged"
    assert cli.main(["export", str(lora_run), "--merged", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    texts = pd.read_parquet(tiny_tokenized.parent / "test.parquet")["text"].tolist()
    scores = pipeline("text-classification", model=str(out), device="cpu")(texts, truncation=True, top_k=None)
    got = pd.DataFrame([{f"prob_{s['label']}": s["score"] for s in row} for row in scores])
    expected = pd.read_parquet(lora_run / "predictions.parquet")
    assert (got[["prob_0", "prob_1"]] - expected[["prob_0", "prob_1"]]).abs().to_numpy().max() < 1e-5
    # A second export into the same folder is refused, and leaves the first alone.
    with pytest.raises(UsageError, match=r"--merged '.*merged' already exists; give a new folder, or remove it"):
        trained.export_merged(trained.open_run(lora_run), out)
    assert (out / "model.safetensors").is_file()
