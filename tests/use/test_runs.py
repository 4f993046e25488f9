"""Tests for ftcompare.use.runs and ftcompare.use.cli without a study: reading the inputs, the
outputs, and the errors for runs and inputs the commands cannot use. The commands on a
real study's runs are tested in test_workflow.py."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from specs import CPU, make_spec, run_snippets, tokenized_sample

from ftcompare.contract import ConfigError, UsageError, study_folder
from ftcompare.methods import METHOD_TABLE
from ftcompare.use import cli, read_texts
from ftcompare.use import runs as trained

REPO_ROOT = Path(__file__).resolve().parents[2]
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
    run = tmp_path / "results" / "runs" / "imdb" / "tiny-roberta" / "lora" / "seed0"
    (run / "model").mkdir(parents=True)
    for kind, status in (("train", train_status), ("eval", eval_status)):
        record = {"kind": kind, "status": status, "reason": None if status == "ok" else "CUDA out of memory"}
        if kind == "train":
            record["config"] = make_spec(run / "base", "lora").to_dict()
        (run / f"{kind}.json").write_text(json.dumps(record))
    (run / "model" / "config.json").write_text(json.dumps({"id2label": {"0": "neg", "1": "pos"}}))
    (run / "model" / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")  # no tensors
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
        ("no-records", "is not a run folder: give a run folder of a study, results/runs/<task>/<model>/<strategy>"),
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
        "(a run folder is e.g. results/runs/imdb/roberta-base/lora/seed0)"
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


# --- inputs read as given, or refused: never cut or misread in silence ---------------------


def test_a_one_column_csv_with_unquoted_commas_is_refused_not_cut_at_the_comma(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("text\nGreat movie, loved it\nDull.\n")
    message = usage_error(str(path))
    assert "line 2 holds 2 fields, its header 1 ('text')" in message and "must be quoted" in message
    path.write_text('text\n"Great movie, loved it"\nDull.\n')  # quoted, as CSV writers do
    assert read_texts(str(path)) == ["Great movie, loved it", "Dull."]


def test_a_tsv_is_read_by_its_columns_and_a_text_column_needs_columns(tmp_path):
    path = tmp_path / "in.tsv"
    path.write_text("id\treview\n1\tGreat, really.\n2\tDull.\n")
    assert read_texts(str(path), column="review") == ["Great, really.", "Dull."]
    (tmp_path / "in.txt").write_text("Great.\n")
    assert "is read as plain text, one review a line, which has no columns" in usage_error(
        str(tmp_path / "in.txt"), column="review"
    )


def test_pipes_and_devices_are_read_as_files(tmp_path):
    fifo = tmp_path / "reviews.pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("Great.\nDull.\n"), daemon=True)
    writer.start()
    try:
        assert read_texts(str(fifo)) == ["Great.", "Dull."]
    finally:
        with contextlib.suppress(OSError), os.fdopen(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)):
            pass  # unblocks a writer the test left waiting for a reader
    writer.join(timeout=10)
    proc = subprocess.run(
        [sys.executable, "-c", "from ftcompare.use.runs import read_texts; print(read_texts('/dev/stdin'))"],
        input="Great.\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "['Great.']", proc.stderr[-2000:]


def test_a_parquet_column_of_lists_is_named(tmp_path):
    pd.DataFrame({"text": [["Great", "fun"], ["Dull"]]}).to_parquet(tmp_path / "in.parquet")
    assert usage_error(str(tmp_path / "in.parquet")).endswith("row 0 holds ['Great', 'fun'], not text (2 such)")


# --- outputs: nothing is overwritten that was not named as new --------------------------------


def predict_error(capsys, run: Path, *args: str) -> str:
    assert cli.main(["predict", str(run), *args]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    return error


def test_an_output_that_would_replace_the_input_or_the_runs_files_is_refused(tmp_path, capsys):
    run = run_folder(tmp_path)
    reviews = tmp_path / "in.csv"
    pd.DataFrame({"text": REVIEWS}).to_csv(reviews, index=False)
    before = reviews.read_bytes()
    assert "is the input: give a new file" in predict_error(
        capsys, run, "--input", str(reviews), "--output", str(reviews)
    )
    assert "is the input" in predict_error(capsys, run, "--input", str(reviews), "--output", str(reviews), "--force")
    own = run / "predictions.parquet"
    own.write_bytes(b"the run's own")
    error = predict_error(capsys, run, "--input", str(reviews), "--output", str(own), "--force")
    assert "is inside the run folder" in error
    assert reviews.read_bytes() == before and own.read_bytes() == b"the run's own"


def test_an_unfinished_run_is_told_its_snakemake_target_and_a_folder_that_is_no_run_none(tmp_path):
    run = run_folder(tmp_path)
    (run / "eval.json").unlink()
    with pytest.raises(UsageError) as info:
        trained.open_run(run)
    assert str(info.value) == (
        f"run {str(run)!r} has no eval.json: it has not finished; `snakemake "
        f"results/runs/imdb/tiny-roberta/lora/seed0/eval.json` in the study's folder ({tmp_path}) runs it"
    )
    for folder in (tmp_path / "elsewhere", tmp_path / "results" / "runs" / "imdb"):
        folder.mkdir(exist_ok=True)
        with pytest.raises(UsageError, match=r"is not a run folder: give a run folder of a study") as info:
            trained.open_run(folder)
        assert "snakemake" not in str(info.value)


def test_no_output_or_export_replaces_what_a_study_wrote_force_or_not(tmp_path, capsys, monkeypatch):
    run = run_folder(tmp_path)
    other = run_folder(tmp_path / "study2")  # another study's run, and its predictions
    first = other.parents[3] / "aaa" / "m" / "lora" / "seed0"  # a run of another task, listed first
    (first / "model").mkdir(parents=True)
    (first / "train.json").write_text("{}")
    (other / "predictions.parquet").write_bytes(b"the other run's")
    (other / "attempt.json").write_text("{}")
    reviews = tmp_path / "in.txt"
    reviews.write_text("Great.\n")
    predict = ["--input", str(reviews), "--force", "--output"]
    error = predict_error(capsys, run, *predict, str(other / "predictions.parquet"))
    assert f"lies inside {str(other)!r}, which the study wrote (the run {str(other)!r})" in error
    results = tmp_path / "results"
    for target in (
        results / "runs" / "imdb" / "x.csv",
        results / "tuning" / "x.csv",
        results / "data" / "k" / "p.parquet",
    ):
        assert "which the study wrote" in predict_error(capsys, run, *predict, str(target))
    assert (other / "predictions.parquet").read_bytes() == b"the other run's"
    loaded = trained.open_run(run)
    for target, says in (
        (other.parents[2], f"lies inside {str(other.parents[3])!r}, which the study wrote (the run {str(other)!r})"),
        (tmp_path / "study2" / "results", "holds"),
        (tmp_path / "study2", f"holds {str(tmp_path / 'study2' / 'results' / 'runs')!r}, which the study wrote"),
        (results / "sources", "lies inside"),
    ):
        with pytest.raises(UsageError, match=re.escape(says)):
            trained.check_export_folder(loaded, target, force=True)
    assert (other / "predictions.parquet").read_bytes() == b"the other run's" and other.parents[2].is_dir()
    # A file or folder of one's own beside the study's folders is the user's to replace.
    monkeypatch.chdir(tmp_path)
    mine = results / "my-predictions.csv"
    mine.write_text("old")
    trained.check_output(str(mine), run=loaded, force=True)
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    assert trained.check_export_folder(loaded, tmp_path / "merged", force=True) == tmp_path / "merged"


def test_a_pair_column_that_is_the_text_column_is_refused(tmp_path):
    pd.DataFrame({"s1": ["a"], "s2": ["b"]}).to_csv(tmp_path / "in.csv", index=False)
    with pytest.raises(UsageError, match="--pair-column 's1' is the text column too"):
        trained.read_pairs(str(tmp_path / "in.csv"), column="s1", pair_column="s1")


def test_an_existing_output_needs_force_and_a_folder_or_a_path_under_a_file_is_named(tmp_path, capsys):
    run = run_folder(tmp_path)
    reviews, out = tmp_path / "in.txt", tmp_path / "out.csv"
    reviews.write_text("Great.\n")
    out.write_text("keep me")
    error = predict_error(capsys, run, "--input", str(reviews), "--output", str(out))
    assert f"--output {str(out)!r} already exists; give a new file, or --force to replace it" in error
    assert out.read_text() == "keep me"
    (tmp_path / "folder.csv").mkdir()
    assert "is a folder: give a file's name" in predict_error(
        capsys, run, "--input", str(reviews), "--output", str(tmp_path / "folder.csv")
    )
    error = predict_error(capsys, run, "--input", str(reviews), "--output", str(out / "x.csv"))
    assert f"{str(out)!r} is a file, not a folder" in error


# --- the command itself -----------------------------------------------------------------------


def test_help_imports_neither_torch_nor_transformers():
    code = (
        "import sys\nfrom ftcompare.use.cli import main\n"
        "for argv in (['--help'], ['predict', '--help'], ['export', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit as exit:\n        assert exit.code == 0\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ftcompare predict RUN_DIR" not in proc.stdout  # argparse's own usage, not the docstring
    assert "usage: ftcompare export [-h] --merged OUT [--force]" in proc.stdout


def test_the_package_installs_the_command():
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"ftcompare": "ftcompare.use.cli:main"}
    proc = subprocess.run([sys.executable, "-m", "ftcompare", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: ftcompare")


# --- on a run trained here (the jobs the workflow runs, without Snakemake) -----------------


@contextlib.contextmanager
def predictions_only():
    """The evaluate job as the workflow runs it, less the inference costs the runs' tests
    never read: single-review latency on 2 test reviews rather than up to 100, and no merged
    copy measured (both tested in tests/train/test_loop.py and tests/model/test_build.py)."""
    from ftcompare.evaluate import scoring

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(scoring, "latency_sample", lambda rows: np.arange(min(rows, 2)))
        patch.setattr(scoring, "_merged_metrics", lambda **kwargs: {})
        yield


def trained_run(spec, *, tokenized: Path, run: Path, checkpoints: Path, data_summary: Path) -> dict:
    """A run folder as the workflow leaves it (train.json, eval.json, predictions.parquet,
    README.md, model/): the finetune job, then the evaluate job (predictions_only). Returns
    the evaluation's record."""
    from ftcompare.evaluate import evaluate_job
    from ftcompare.train import finetune_job

    finetune_job(
        spec=spec,
        tokenized_dir=tokenized,
        model_dir=run / "model",
        record_path=run / "train.json",
        checkpoint_dir=checkpoints,
        attempt_path=run / "train.attempt.json",
        retry_marker="first",
    )
    with predictions_only():
        return evaluate_job(
            train_record_path=run / "train.json",
            tokenized_dir=tokenized,
            model_dir=run / "model",
            record_path=run / "eval.json",
            predictions_path=run / "predictions.parquet",
            card_path=run / "README.md",
            data_summary_path=data_summary,
        )


@pytest.fixture(scope="module")
def lora_run(tiny_roberta, tiny_tokenized, tmp_path_factory) -> Path:
    """A LoRA run folder as the workflow leaves it: train.json, eval.json, predictions.parquet, README.md, model/."""
    study = tmp_path_factory.mktemp("study")
    run = study / "results" / "runs" / "imdb" / "tiny-roberta" / "lora" / "seed0"
    record = trained_run(
        make_spec(tiny_roberta, "lora"),
        tokenized=tiny_tokenized,
        run=run,
        checkpoints=study / "results" / "checkpoints" / "lora" / "seed0",
        data_summary=tiny_tokenized.parent / "summary.json",
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


def test_the_cards_snippet_and_commands_work_from_any_folder(lora_run, tiny_tokenized, tmp_path, monkeypatch):
    from ftcompare.evaluate import evaluate_job

    study = lora_run.parents[5]
    monkeypatch.chdir(study)  # as Snakemake runs the job: paths relative to the study's folder
    run = lora_run.relative_to(study)
    with predictions_only():
        evaluate_job(
            train_record_path=run / "train.json",
            tokenized_dir=tiny_tokenized,
            model_dir=run / "model",
            record_path=tmp_path / "eval.json",
            predictions_path=tmp_path / "predictions.parquet",
            card_path=tmp_path / "README.md",
            data_summary_path=tiny_tokenized.parent / "summary.json",
        )
    card = (tmp_path / "README.md").read_text()
    assert f'folder = "{lora_run / "model"}"' in card and f"`ftcompare predict {lora_run} --input" in card


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
    with pytest.raises(UsageError, match=r"--merged '.*merged' already exists and is not empty; give a new folder"):
        trained.export_merged(trained.open_run(lora_run), out)
    assert (out / "model.safetensors").is_file()


def copy_of(run: Path, tmp_path: Path) -> Path:
    """A copy of a run folder, to break."""
    copy = tmp_path / "results" / "runs" / "imdb" / "tiny-roberta" / run.parent.name / run.name
    shutil.copytree(run, copy)
    return copy


def set_base(run: Path, base: str) -> None:
    path = run / "model" / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "base_model_name_or_path": base}))


def test_a_base_a_run_folder_names_as_a_package_is_never_imported(lora_run, tmp_path, monkeypatch, capsys):
    run = copy_of(lora_run, tmp_path)
    marker = tmp_path / "imported"
    (tmp_path / "evil_probe.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\ndef get_model_path():\n    return '/'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "in.txt").write_text("Great.\n")
    for name in ("evil_probe", "this"):
        set_base(run, f"package:{name}")
        imported = name in sys.modules
        error = predict_error(capsys, run, "--input", str(tmp_path / "in.txt"), "--device", "cpu")
        assert f"names its base 'package:{name}': ftcompare never imports a module a run folder names" in error
        assert "pass --base PATH_OR_HUB_ID" in error
        assert (name in sys.modules) == imported
        with pytest.raises(UsageError, match="never imports a module a run folder names"):
            trained.export_merged(trained.open_run(run), tmp_path / "merged")
    assert not marker.exists() and not (tmp_path / "merged").exists()


def test_the_evaluate_job_never_imports_a_package_a_train_record_names(
    lora_run, tiny_roberta, tiny_tokenized, tmp_path, monkeypatch
):
    from ftcompare.evaluate import evaluate_job

    run = copy_of(lora_run, tmp_path)
    marker = tmp_path / "imported"
    (tmp_path / "evil_probe.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    record = json.loads((run / "train.json").read_text())
    record["config"]["model_name_or_path"] = "package:evil_probe"
    (run / "train.json").write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="names model 'package:evil_probe', the study's model.name_or_path is"):
        evaluate_job(
            train_record_path=run / "train.json",
            tokenized_dir=tiny_tokenized,
            model_dir=run / "model",
            record_path=run / "eval2.json",
            predictions_path=run / "predictions2.parquet",
            study_model=str(tiny_roberta),
        )
    assert not marker.exists() and "evil_probe" not in sys.modules


def test_a_base_the_user_names_replaces_the_one_the_adapter_names(lora_run, tiny_roberta, tiny_tokenized, tmp_path):
    run = copy_of(lora_run, tmp_path)
    set_base(run, str(tmp_path / "moved-away"))
    texts = pd.read_parquet(tiny_tokenized.parent / "test.parquet")["text"].tolist()
    with pytest.raises(UsageError, match=r"cannot load: .*moved-away.* is not a folder; .* pass --base PATH_OR_HUB_ID"):
        trained.predict(trained.open_run(run), texts[:2], device=CPU)
    got = trained.predict(trained.open_run(run), texts, device=CPU, base=str(tiny_roberta))
    expected = pd.read_parquet(lora_run / "predictions.parquet")
    assert (got[["prob_0", "prob_1"]] - expected[["prob_0", "prob_1"]]).abs().to_numpy().max() <= 1e-6


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("offline-hub-base", "does not load (.*); a hub id needs the network or the Hugging Face cache"),
        ("no-adapter-weights", r"holds no adapter weights \(one of \['adapter_model.safetensors'"),
        ("truncated-weights", r"adapter_model.safetensors is damaged \(.* bytes where its header announces"),
    ],
)
def test_a_run_that_cannot_load_says_why_without_a_traceback(lora_run, tmp_path, capsys, damage, message):
    run = copy_of(lora_run, tmp_path)
    weights = run / "model" / "adapter_model.safetensors"
    if damage == "offline-hub-base":
        set_base(run, "ftcompare-tests/no-such-model")
    elif damage == "no-adapter-weights":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:-100])
    (tmp_path / "in.txt").write_text("Great.\n")
    error = predict_error(capsys, run, "--input", str(tmp_path / "in.txt"), "--device", "cpu")
    assert re.search(message, error), error


def test_predict_refuses_non_finite_logits_as_the_evaluate_job_does(lora_run, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    run = copy_of(lora_run, tmp_path)
    weights = run / "model" / "adapter_model.safetensors"
    tensors = load_file(weights)
    tensors = {name: t.fill_(float("nan")) if "classifier" in name else t for name, t in tensors.items()}
    save_file(tensors, weights)
    (tmp_path / "in.txt").write_text("Great.\nDull.\n")
    error = predict_error(capsys, run, "--input", str(tmp_path / "in.txt"), "--device", "cpu")
    assert "cannot label these texts: diverged: the model's logits are not finite for 2 of 2 reviews" in error


def test_a_closed_pipe_ends_predict_quietly(lora_run):
    # 10,000 rows of output (~280 KB), several times a pipe's buffer (64 KiB), so predict is
    # still writing when `head` has gone; short reviews, so that labelling them takes seconds.
    texts = ["Great.", "Dull and long.", "I liked it a lot!", "Not for me."] * 2500
    proc = subprocess.run(
        f"{sys.executable} -m ftcompare predict {lora_run} --input - --format parquet --device cpu | head -1",
        shell=True,
        input=pd.DataFrame({"text": texts}).to_parquet(index=False),
        capture_output=True,
        timeout=600,
    )
    assert proc.stdout.decode() == "row,prediction,prob_0,prob_1\n"
    assert "Traceback" not in proc.stderr.decode() and "BrokenPipe" not in proc.stderr.decode()


def test_export_never_writes_into_a_folder_it_was_not_given_as_new(lora_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main(["export", str(lora_run), "--merged", "."]) == 2
    assert "--merged '.' is the working folder or holds it: give a new folder's name" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    assert cli.main(["export", str(lora_run), "--merged", "taken"]) == 2
    assert "--merged 'taken' already exists and is not empty; give a new folder, or --force" in capsys.readouterr().err
    assert cli.main(["export", str(lora_run), "--merged", str(lora_run / "model")]) == 2
    assert "holds or is inside the run folder" in capsys.readouterr().err
    assert cli.main(["export", str(lora_run), "--merged", "notes.txt/merged"]) == 2
    assert "'notes.txt' is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine" == (tmp_path / "taken" / "notes.txt").read_text()
    assert cli.main(["export", str(lora_run), "--merged", "taken", "--force"]) == 0
    assert (tmp_path / "taken" / "model.safetensors").is_file() and not (tmp_path / "taken" / "notes.txt").exists()


# --- every method, at the model's position limit: predict and the card's snippet reproduce the runs ---

# The tiny RoBERTa's 128 positions: a prompt-learning run reads fewer text tokens than the
# tokenized 128 (models.text_length), and the test reviews are longer than that.
LIMIT = 128
NAMED = [name for name in METHOD_TABLE if name != "peft"]


@pytest.fixture(scope="module")
def method_runs(tiny_roberta, imdb_sample, tmp_path_factory) -> dict[str, Path]:
    """A run of every named method (and LoRA on PEFT's default modules), as the workflow leaves it."""
    study = tmp_path_factory.mktemp("methods")
    # 16 training reviews (two steps of 8) and 16 test reviews: the tests compare predictions.
    tokenized = tokenized_sample(
        study / "data", imdb_sample, tiny_roberta, train_size=20, test_size=16, max_length=LIMIT
    )
    entries = {name: None for name in NAMED} | {
        "lora_default_targets": {"method": "lora", "lora": {"target_modules": None}}
    }
    runs = {}
    for strategy, entry in entries.items():
        run = study / "results" / "runs" / "imdb" / "tiny-roberta" / strategy / "seed0"
        trained_run(
            make_spec(tiny_roberta, strategy, entry, max_length=LIMIT, batch_size=8, eval_batch_size=8),
            tokenized=tokenized,
            run=run,
            checkpoints=study / "results" / "checkpoints" / strategy / "seed0",
            data_summary=tokenized.parent / "summary.json",
        )
        runs[strategy] = run
    return runs


def method_texts(runs: dict[str, Path]) -> list[str]:
    return pd.read_parquet(study_folder(next(iter(runs.values()))) / "data" / "test.parquet")["text"].tolist()


@pytest.mark.parametrize("strategy", [*NAMED, "lora_default_targets"])
def test_predict_reproduces_every_methods_predictions_on_long_reviews(method_runs, strategy):
    run = method_runs[strategy]
    for kind in ("train", "eval"):
        record = json.loads((run / f"{kind}.json").read_text())
        assert record["status"] == "ok", record.get("reason")
    texts = method_texts(method_runs)
    got = trained.predict(trained.open_run(run), texts, device=CPU)
    expected = pd.read_parquet(run / "predictions.parquet")
    assert got["prediction"].tolist() == expected["prediction"].tolist()
    assert (got[["prob_0", "prob_1"]] - expected[["prob_0", "prob_1"]]).abs().to_numpy().max() <= 1e-5


def printed_probabilities(output: str, count: int) -> np.ndarray:
    """What a snippet printed: the pipeline's lists of {label, score}, or a line per review."""
    last = output.strip().splitlines()[-1]
    if last.startswith("[["):
        rows = ast.literal_eval(last)
        return np.array([[s["score"] for s in sorted(row, key=lambda s: int(s["label"]))] for row in rows])
    # "label [p0, p1] review" per review; a review's own line breaks start no such line.
    found = re.findall(r"^\S+ (\[[-+0-9.e]+(?:, [-+0-9.e]+)*\]) ", output, flags=re.MULTILINE)
    return np.array([ast.literal_eval(probabilities) for probabilities in found[-count:]])


def test_every_methods_card_snippet_reproduces_its_predictions(method_runs):
    from ftcompare.evaluate import EXAMPLE_REVIEWS

    texts = method_texts(method_runs)
    snippets = {}
    for strategy, run in method_runs.items():
        card = (run / "README.md").read_text()
        snippet = card.split("```python\n")[1].split("```")[0]
        snippets[strategy] = snippet.replace(json.dumps(EXAMPLE_REVIEWS), json.dumps(texts))
    printed = run_snippets(snippets, cwd=next(iter(method_runs.values())).parents[3])
    wrong = {}
    for strategy, run in method_runs.items():
        expected = pd.read_parquet(run / "predictions.parquet")[["prob_0", "prob_1"]].to_numpy()
        got = printed_probabilities(printed[strategy], len(texts))
        if got.shape != expected.shape or np.abs(got - expected).max() > 1e-4:
            wrong[strategy] = printed[strategy][-300:]
    assert not wrong, wrong


# --- sentence-pair runs (issue 19) -----------------------------------------------------------


# Two steps of 16 and a few dozen test pairs: the tests compare predictions, not accuracy.
PAIR_TRAIN, PAIR_TEST = 40, 24


@pytest.fixture(scope="module", params=["tiny_roberta", "tiny_bert"])
def pair_run(request, imdb_sample, tmp_path_factory) -> Path:
    """A LoRA run of a sentence-pair task (each review's first half and second half as
    sentence1 / sentence2, source columns named as GLUE's MRPC names them), by a RoBERTa
    (no segment ids) and by a BERT (the second text is segment 1)."""
    from ftcompare.data import prepare, prepared_text_columns, tokenize_splits, write_prepared

    model_path = request.getfixturevalue(request.param)
    study = tmp_path_factory.mktemp("pair-study")
    files = {}
    for split in ("train", "test"):
        frame = pd.read_parquet(imdb_sample / f"{split}.parquet")
        words = frame["text"].str.split()
        frame = pd.DataFrame(
            {
                "sentence1": words.map(lambda w: " ".join(w[: len(w) // 2])),
                "sentence2": words.map(lambda w: " ".join(w[len(w) // 2 :])),
                "label": frame["label"],
            }
        )
        files[split] = study / f"raw-{split}.parquet"
        frame.to_parquet(files[split], index=False)
    data_dir = study / "results" / "data" / "pairs"
    data = {
        "source": "parquet",
        "train": str(files["train"]),
        "test": str(files["test"]),
        "text_column": "sentence1",
        "text_pair_column": "sentence2",
        "label_column": "label",
        "train_size": PAIR_TRAIN,
        "test_size": PAIR_TEST,
        "validation_fraction": 0.2,
        "split_seed": 42,
    }
    prepared = prepare(data)
    paths = {split: data_dir / f"{split}.parquet" for split in ("train", "validation", "test")}
    write_prepared(prepared, out_paths=paths, summary_path=data_dir / "summary.json", settings=data)
    tokenized = study / "results" / "tokenized" / "pairs"
    tokenize_splits(
        split_paths=paths,
        model_name_or_path=str(model_path),
        max_length=64,
        out_dir=tokenized,
        text_columns=prepared_text_columns(paths["train"]),
    )
    run = study / "results" / "runs" / "lora" / "seed0"
    record = trained_run(
        make_spec(model_path, "lora"),
        tokenized=tokenized,
        run=run,
        checkpoints=study / "results" / "checkpoints" / "lora" / "seed0",
        data_summary=data_dir / "summary.json",
    )
    assert record["status"] == "ok", record.get("reason")
    return run


def test_predict_on_a_pair_runs_test_split_reproduces_its_predictions(pair_run, tmp_path):
    """The run records its two columns; predict reads them by default from a CSV named as
    the data was, and reproduces the evaluate job's predictions."""
    assert json.loads((pair_run / "train.json").read_text())["text_columns"] == {
        "text": "sentence1",
        "text_pair": "sentence2",
    }
    test = pd.read_parquet(pair_run.parents[2] / "data" / "pairs" / "test.parquet")
    test.rename(columns={"text": "sentence1", "text_pair": "sentence2"}).to_csv(tmp_path / "pairs.csv", index=False)
    out = tmp_path / "p.parquet"
    argv = ["predict", str(pair_run), "--input", str(tmp_path / "pairs.csv"), "--output", str(out), "--device", "cpu"]
    assert cli.main(argv) == 0
    got, expected = pd.read_parquet(out), pd.read_parquet(pair_run / "predictions.parquet")
    assert got["prediction"].tolist() == expected["prediction"].tolist() and len(got) == PAIR_TEST
    assert (got[["prob_0", "prob_1"]] - expected[["prob_0", "prob_1"]]).abs().to_numpy().max() <= 1e-6
    # Other column names by option; the first text alone would be another input: refused.
    test.to_parquet(tmp_path / "prepared.parquet", index=False)
    argv2 = [
        "predict",
        str(pair_run),
        "--input",
        str(tmp_path / "prepared.parquet"),
        "--output",
        str(tmp_path / "q.csv"),
    ]
    assert cli.main([*argv2, "--text-column", "text", "--pair-column", "text_pair", "--device", "cpu"]) == 0
    assert pd.read_csv(tmp_path / "q.csv")["prediction"].tolist() == expected["prediction"].tolist()
    with pytest.raises(UsageError, match="classifies sentence pairs"):
        trained.predict(trained.open_run(pair_run), test["text"].tolist())


def test_a_single_text_run_refuses_a_pair_column(lora_run, tmp_path, capsys):
    pd.DataFrame({"text": ["a"], "b": ["c"]}).to_csv(tmp_path / "in.csv", index=False)
    assert cli.main(["predict", str(lora_run), "--input", str(tmp_path / "in.csv"), "--pair-column", "b"]) == 2
    assert "classifies one text a row" in capsys.readouterr().err


def test_a_pair_runs_card_shows_a_pair_call_that_reproduces_its_predictions(pair_run):
    card = (pair_run / "README.md").read_text()
    assert "sentence pairs of columns `sentence1` and `sentence2`" in card
    assert 'truncation="longest_first"' in card and "pairs.csv` (columns `sentence1` and `sentence2`)" in card
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    # The snippet's own call, on the test pairs instead of its examples, gives the run's probabilities.
    test = pd.read_parquet(pair_run.parents[2] / "data" / "pairs" / "test.parquet")
    code = snippet.replace("reviews = [", f"reviews = {test['text'].tolist()!r} or [").replace(
        "second = [", f"second = {test['text_pair'].tolist()!r} or ["
    )
    code = code.replace("print(model.config.id2label[p.index(max(p))], p, review)", "got.append(p)")
    scope = {"got": []}
    exec(compile(code, "card", "exec"), scope)
    expected = pd.read_parquet(pair_run / "predictions.parquet")[["prob_0", "prob_1"]].to_numpy()
    assert np.abs(np.array(scope["got"]) - expected).max() < 1e-4
