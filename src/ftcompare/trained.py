"""Using a trained run: label new text with it (`ftcompare predict`) and export its adapter
merged into its base (`ftcompare export --merged`).

A run is applied as the study evaluated it: the model rebuilt the way it was trained
(models.load_trained: a QLoRA base in 4 bits), the tokenizer saved in its model folder,
batches sorted by length within the run's eval_batch_size and token budget under
inference_mode (inference.predict_logits, the evaluate job's own code), on the GPU if
there is one. On the test split that reproduces the run's predictions.parquet.

A run folder is results/runs/<strategy>/seed<N>: its train.json and eval.json say how it
was trained and that it finished, its model/ folder holds the model (models.save_trained).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ftcompare.config import ConfigError, RunSpec
from ftcompare.data import CSV_ENCODING, read_csv
from ftcompare.fetch import FETCHED_FROM
from ftcompare.records import Status, upgrade
from ftcompare.sources import is_hub_id

log = logging.getLogger(__name__)

INPUT_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}  # anything else: text, a review a line
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet"}


class UsageError(ValueError):
    """A run, an input or an output the commands cannot use; the message says which and why."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainedRun:
    run_dir: Path
    model_dir: Path
    spec: RunSpec
    train: dict[str, Any]
    evaluation: dict[str, Any]
    num_labels: int
    # Label k's name where the data named its classes; None: the classes are their numbers.
    label_names: list[str] | None

    @property
    def adapter(self) -> bool:
        return (self.model_dir / "adapter_config.json").is_file()


def open_run(run_dir: str | Path) -> TrainedRun:
    """A run folder that finished ok and whose model folder loads alone, or UsageError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file, not a folder" if run_dir.exists() else "does not exist"
        raise UsageError(f"run folder {str(run_dir)!r} {what} (a run folder is e.g. results/runs/lora/seed0)")
    if not (run_dir / "train.json").is_file() and (run_dir.parent / "train.json").is_file():
        raise UsageError(f"{str(run_dir)!r} is a run's model folder; give the run folder, {str(run_dir.parent)!r}")
    records = {}
    for kind in ("train", "eval"):
        path = run_dir / f"{kind}.json"
        if not path.is_file():
            raise UsageError(
                f"{str(run_dir)!r} has no {kind}.json: not a run folder (e.g. results/runs/lora/seed0), or a run "
                f"that has not finished; `snakemake {path}` runs it"
            )
        try:
            records[kind] = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path} is not a run record (JSON written by the workflow): {exc}") from exc
        if not isinstance(records[kind], dict) or "status" not in records[kind]:
            raise UsageError(f"{path} is not a run record written by the workflow: it has no status")
        if records[kind].get("status") != Status.OK:
            raise UsageError(
                f"run {str(run_dir)!r} did not finish ok: its {kind}.json says {records[kind].get('status')!r} "
                f"({records[kind].get('reason') or 'no reason recorded'}); only a run whose training and "
                "evaluation ended ok can be used"
            )
        try:  # a record of any format, as the current one has it
            records[kind] = upgrade(records[kind], kind=kind)
        except ValueError as exc:
            raise UsageError(f"{path}: {exc}") from exc
    model_dir = run_dir / "model"
    missing = [
        name for name in ("config.json", "tokenizer.json", "tokenizer_config.json") if not (model_dir / name).is_file()
    ]
    if missing:
        raise UsageError(
            f"{model_dir} lacks {missing}: the run was trained before run folders kept their tokenizer and "
            f"labels; train it again (`snakemake --forcerun {run_dir / 'train.json'}`)"
        )
    id2label = json.loads((model_dir / "config.json").read_text()).get("id2label")
    if not id2label:
        raise UsageError(f"{model_dir / 'config.json'} names no classes (id2label): not a model folder the study wrote")
    names = [str(id2label[str(k)]) for k in range(len(id2label))]
    try:
        spec = RunSpec.from_dict(records["train"]["config"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise UsageError(
            f"{run_dir / 'train.json'} holds no run settings this version of ftcompare reads ({exc!r}); "
            "train the run again with it"
        ) from exc
    return TrainedRun(
        run_dir=run_dir,
        model_dir=model_dir,
        spec=spec,
        train=records["train"],
        evaluation=records["eval"],
        num_labels=len(names),
        label_names=None if names == [str(k) for k in range(len(names))] else names,
    )


# --- reading the input -------------------------------------------------------------------


def input_format(source: str, requested: str | None = None) -> str:
    if requested is not None:
        return requested
    if source == "-":
        return "text"
    return INPUT_FORMATS.get(Path(source).suffix.lower(), "text")


def read_texts(source: str, *, fmt: str | None = None, column: str = "text") -> list[str]:
    """The texts to label, in input order: a CSV or Parquet file's `column`, or a text file
    with one review a line; `source` "-" reads standard input (text unless `fmt` says)."""
    fmt = input_format(source, fmt)
    where = "standard input" if source == "-" else f"--input {source!r}"
    if source != "-" and not Path(source).is_file():
        raise UsageError(f"{where} {'is a folder, not a file' if Path(source).is_dir() else 'does not exist'}")
    raw = sys.stdin.buffer.read() if source == "-" else None
    if fmt == "text":
        return _lines(raw if raw is not None else Path(source).read_bytes(), where=where)
    if fmt == "csv":
        if raw is None:
            frame = read_csv(Path(source), where=where)
        else:
            try:
                frame = pd.read_csv(io.BytesIO(raw), encoding=CSV_ENCODING, keep_default_na=False)
            except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
                raise UsageError(f"{where} is not a readable UTF-8 CSV file: {exc}") from exc
    else:
        try:
            frame = pd.read_parquet(io.BytesIO(raw) if raw is not None else source)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise UsageError(f"{where} is not a readable Parquet file: {exc}") from exc
    if column not in frame.columns:
        raise UsageError(
            f"{where} has no column {column!r}; its columns are {list(frame.columns)}: choose one with --text-column"
        )
    return _checked(frame[column].tolist(), where=f"{where}, column {column!r}", unit="row")


def _lines(raw: bytes, *, where: str) -> list[str]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(f"{where} is not UTF-8: byte {raw[exc.start]:#04x} on line {line} ({exc.reason})") from exc
    # Split on line feeds alone: a review may hold other characters str.splitlines breaks at (U+2028, \x85).
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline ends the last review; it starts no new one
    return _checked(lines, where=where, unit="line", first=1)


def _checked(values: list[Any], *, where: str, unit: str, first: int = 0) -> list[str]:
    if not values:
        raise UsageError(f"{where} holds no reviews: nothing to predict")
    missing = [i for i, value in enumerate(values) if not isinstance(value, str) and pd.isna(value)]
    if missing:
        raise UsageError(f"{where}: {unit} {missing[0] + first} has no text (null; {len(missing)} such in all)")
    bad = [i for i, value in enumerate(values) if not isinstance(value, str)]
    if bad:
        raise UsageError(f"{where}: {unit} {bad[0] + first} holds {values[bad[0]]!r}, not text ({len(bad)} such)")
    empty = [i for i, value in enumerate(values) if not value.strip()]
    if empty:
        raise UsageError(
            f"{where}: {unit} {empty[0] + first} is empty ({len(empty)} empty in all); every {unit} is one "
            "review: remove the empty ones or give them text"
        )
    return values


def output_format(path: str | None) -> str:
    if path is None:
        return "csv"  # to standard output
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UsageError(f"--output {path!r}: give a file ending in {' or '.join(OUTPUT_FORMATS)}")
    return fmt


def write_predictions(frame: pd.DataFrame, path: str | None) -> None:
    """`frame` as CSV or Parquet by `path`'s extension; standard output (CSV) for None."""
    fmt = output_format(path)
    if path is None:
        frame.to_csv(sys.stdout, index=False)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


# --- the model ---------------------------------------------------------------------------


def base_model_source(run: TrainedRun) -> str:
    """Where an adapter's base model loads from here: the study's fetched copy of a hub
    model when it is this model's (results/sources/model beside results/runs), else the
    base its adapter config names (a hub id, or an absolute path)."""
    configured = run.spec.model_name_or_path
    if not run.adapter:
        return configured  # the folder holds the whole model
    named = json.loads((run.model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    if is_hub_id(named):
        resolved = run.run_dir.resolve()
        if len(resolved.parents) > 2:
            fetched = resolved.parents[2] / "sources" / "model"
            marker = fetched / FETCHED_FROM
            if marker.is_file() and json.loads(marker.read_text()).get("repo_id") == named:
                return str(fetched)
    return named


def load_for_inference(run: TrainedRun, *, device: Any, merged: bool = False) -> tuple[Any, Any]:
    """The run's model, as trained or `merged` into its base, on `device`, and its precision."""
    from ftcompare import models

    spec = dataclasses.replace(run.spec, model_name_or_path=base_model_source(run))
    try:
        precision = models.resolve_precision(requested=spec.precision, method=spec.method, device=device)
    except ValueError:  # bf16 forced for training, and this device has none: fp32 computes the same model
        precision = models.resolve_precision(requested="auto", method=spec.method, device=device)
    load = models.load_merged if merged else models.load_trained
    try:
        model = load(spec=spec, model_dir=run.model_dir, num_labels=run.num_labels, device=device, precision=precision)
    except models.StrategyUnavailable as exc:
        raise UsageError(
            f"run {str(run.run_dir)!r} ({spec.method}) rebuilds its base in 4 bits with bitsandbytes, and here {exc}; "
            "install bitsandbytes (pip install bitsandbytes) where you run this"
        ) from exc
    except models.NotMergeable as exc:
        raise UsageError(f"run {str(run.run_dir)!r} cannot be merged: {exc}") from exc
    return model, precision


def parse_device(text: str) -> Any:
    """--device: auto (None: a GPU if there is one), cpu, cuda or cuda:N; UsageError otherwise."""
    if text == "auto":
        return None
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {text!r}: give auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise UsageError(f"--device {text!r}: this machine has {count} usable CUDA GPU(s); give cpu or auto")
    return device


def predict(run: TrainedRun, texts: list[str], *, device: Any | None = None) -> pd.DataFrame:
    """One row per text, in order: `row`, `prediction` (the class's name where the data
    named its classes, else its number) and `prob_<class>` for each class."""
    from ftcompare.batching import TokenizedSplit
    from ftcompare.evaluation import softmax
    from ftcompare.inference import predict_logits
    from ftcompare.steps import select_device
    from ftcompare.tokenization import encode, load_tokenizer

    device = device or select_device()
    tokenizer, pad_token_id = load_tokenizer(str(run.model_dir), max_length=run.spec.max_length)
    ids = encode(tokenizer, texts)
    split = TokenizedSplit(
        input_ids=[np.asarray(row, dtype=np.int64) for row in ids],
        labels=np.zeros(len(ids), dtype=np.int64),
        lengths=np.array([len(row) for row in ids], dtype=np.int64),
    )
    model, precision = load_for_inference(run, device=device)
    logits = predict_logits(
        model,
        split,
        batch_size=run.spec.eval_batch_size,
        max_tokens=run.spec.eval_max_tokens_per_batch,
        pad_token_id=pad_token_id,
        pad_to_multiple_of=run.spec.pad_to_multiple_of,
        device=device,
        precision=precision,
    )
    probabilities, predicted = softmax(logits), logits.argmax(axis=1)
    names = run.label_names or list(range(run.num_labels))
    frame = pd.DataFrame({"row": np.arange(len(texts)), "prediction": [names[k] for k in predicted]})
    for k, name in enumerate(names):
        frame[f"prob_{name}"] = probabilities[:, k]
    return frame


# --- export --------------------------------------------------------------------------------


def _study_file(run: TrainedRun, recorded: str | None) -> Path | None:
    """A path a record holds, relative to the study's folder (where Snakemake ran: the
    folder holding results/), found from the run folder results/runs/<strategy>/seed<N>."""
    if not recorded:
        return None
    path = Path(recorded)
    if not path.is_absolute():
        parents = run.run_dir.resolve().parents
        path = parents[3] / path if len(parents) > 3 else path
    return path if path.exists() else None


def data_summary(run: TrainedRun) -> dict[str, Any] | None:
    """The summary of the data the run learnt from, via its tokenized data's record."""
    tokenized = _study_file(run, run.train.get("tokenized_dir"))
    if tokenized is None or not (tokenized / "tokenization.json").is_file():
        return None
    data_dir = _study_file(run, json.loads((tokenized / "tokenization.json").read_text()).get("data"))
    summary = None if data_dir is None else data_dir / "summary.json"
    return json.loads(summary.read_text()) if summary is not None and summary.is_file() else None


def export_merged(run: TrainedRun, out: str | Path) -> Path:
    """Write the run's adapter merged into its base to the new folder `out`: a plain
    transformers model (weights, config with the class names, tokenizer, model card) that
    `pipeline("text-classification", model=out)` loads without PEFT. Merged on the CPU in
    fp32, so the saved weights are full precision whatever the run trained in."""
    import torch
    from transformers import AutoTokenizer

    from ftcompare.modelcard import write_model_card

    out = Path(out)
    if not run.adapter:
        raise UsageError(
            f"run {str(run.run_dir)!r} ({run.spec.method}) saved the whole model: {run.model_dir} already holds "
            f'a plain transformers model, which pipeline("text-classification", model="{run.model_dir}") loads'
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--merged {str(out)!r} already exists; give a new folder, or remove it first")
    merged, _ = load_for_inference(run, device=torch.device("cpu"), merged=True)
    config = json.loads((run.model_dir / "config.json").read_text())
    merged.config.id2label = {int(k): name for k, name in config["id2label"].items()}
    merged.config.label2id = {name: k for k, name in merged.config.id2label.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside its destination, then renamed: an interrupted export leaves no half a model under `out`.
    partial = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        merged.save_pretrained(str(partial))
        AutoTokenizer.from_pretrained(str(run.model_dir)).save_pretrained(str(partial))
        write_model_card(
            partial / "README.md",
            train=run.train,
            evaluation=run.evaluation,
            data=data_summary(run),
            folder=str(out),
            run_dir=str(run.run_dir),
            merged=True,
        )
        if out.exists():
            out.rmdir()  # empty, checked above
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out
