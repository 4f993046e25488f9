"""Using a trained run: label new text with it (`ftcompare predict`) and export its adapter
merged into its base (`ftcompare export --merged`).

A run is applied as the study evaluated it: the model rebuilt the way it was trained
(models.load_trained: a QLoRA base in 4 bits), the tokenizer saved in its model folder,
batches sorted by length within the run's eval_batch_size and token budget under
inference_mode (inference.predict_logits, the evaluate job's own code), on the GPU if
there is one. On the test split that reproduces the run's predictions.parquet.

A run folder is results/runs/<task>/<model>/<strategy>/seed<N>: its train.json and eval.json say how it
was trained and that it finished, its model/ folder holds the model (models.save_trained).
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ftcompare.contract import (
    ADAPTER_WEIGHT_FILES,
    PACKAGE_PREFIX,
    WEIGHT_FILES,
    ConfigError,
    ModelSourceError,
    Status,
    UsageError,
    check_model_source,
    is_hub_id,
    layout,
    resolve_model_path,
    safetensors_problem,
    upgrade,
)
from ftcompare.data import FETCHED_FROM, DataError, read_csv, text_columns_or_default, tokenization_meta
from ftcompare.methods import RunSpec

log = logging.getLogger(__name__)

INPUT_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}  # anything else: text, a review a line
CSV_SEPARATORS = {"csv": ",", "tsv": "\t"}
OUTPUT_FORMATS = {".csv": "csv", ".parquet": "parquet"}


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

    @property
    def text_columns(self) -> dict[str, str | None]:
        """The data's columns behind the text and, for a sentence-pair task, its second
        text (train.json; a run recorded before pairs existed read one column, `text`)."""
        return text_columns_or_default(self.train.get("text_columns"))

    @property
    def pair(self) -> bool:
        return bool(self.text_columns.get("text_pair"))


def open_run(run_dir: str | Path) -> TrainedRun:
    """A run folder that finished ok and whose model folder loads alone, or UsageError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file, not a folder" if run_dir.exists() else "does not exist"
        raise UsageError(f"run folder {str(run_dir)!r} {what} (a run folder is e.g. {layout.RUN_EXAMPLE})")
    if not (run_dir / "train.json").is_file() and (run_dir.parent / "train.json").is_file():
        raise UsageError(f"{str(run_dir)!r} is a run's model folder; give the run folder, {str(run_dir.parent)!r}")
    records = {}
    for kind in ("train", "eval"):
        path = run_dir / f"{kind}.json"
        if not path.is_file():
            raise UsageError(_no_record(run_dir, kind))
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


def _no_record(run_dir: Path, kind: str) -> str:
    """Why `run_dir` without its `kind`.json cannot be used, and what to do: a folder where
    the study puts a run (results/runs/<task>/<model>/<strategy>/seed<N>) has not finished,
    and Snakemake, in the study's folder, runs it; any other folder is not a run's."""
    folder = layout.study_folder(run_dir)
    if folder is None or not re.fullmatch(r"seed\d+", run_dir.resolve().name):
        return (
            f"{str(run_dir)!r} is not a run folder: give a run folder of a study, "
            f"results/runs/<task>/<model>/<strategy>/seed<N> (e.g. {layout.RUN_EXAMPLE}), which holds train.json and "
            "eval.json"
        )
    target = run_dir.resolve().relative_to(folder) / f"{kind}.json"
    return (
        f"run {str(run_dir)!r} has no {kind}.json: it has not finished; `snakemake {target}` in the study's folder "
        f"({folder}) runs it"
    )


# --- reading the input -------------------------------------------------------------------


def input_format(source: str, requested: str | None = None) -> str:
    if requested is not None:
        return requested
    if source == "-":
        return "text"
    return INPUT_FORMATS.get(Path(source).suffix.lower(), "text")


def read_pairs(
    source: str, *, fmt: str | None = None, column: str | None = None, pair_column: str | None = None
) -> tuple[list[str], list[str] | None]:
    """The texts to label and, with `pair_column`, each one's second text (a sentence-pair
    run's input: two columns of a CSV, TSV or Parquet file)."""
    if pair_column is None:
        return read_texts(source, fmt=fmt, column=column), None
    fmt = input_format(source, fmt)
    where = "standard input" if source == "-" else f"--input {source!r}"
    if fmt == "text":
        raise UsageError(
            f"--pair-column {pair_column!r}: {where} is read as plain text, one text a line, which has no columns; "
            "a sentence-pair run reads two columns of a .csv, .tsv or .parquet file (or --format csv, tsv or parquet)"
        )
    raw = sys.stdin.buffer.read() if source == "-" else _read_input(source, where=where)
    frame = _frame(raw, fmt=fmt, where=where)
    column = column or "text"
    missing = [c for c in (column, pair_column) if c not in frame.columns]
    if missing:
        raise UsageError(
            f"{where} has no column(s) {missing}; its columns are {list(frame.columns)}: choose them with "
            "--text-column and --pair-column"
        )
    if pair_column == column:
        raise UsageError(
            f"--pair-column {pair_column!r} is the text column too: each text would be paired with itself; name the "
            "column of the second texts (--pair-column), or the first texts' (--text-column)"
        )
    texts = _checked(frame[column].tolist(), where=f"{where}, column {column!r}", unit="row")
    pairs = _checked(frame[pair_column].tolist(), where=f"{where}, column {pair_column!r}", unit="row")
    return texts, pairs


def _frame(raw: bytes, *, fmt: str, where: str) -> pd.DataFrame:
    if fmt == "parquet":
        try:
            return pd.read_parquet(io.BytesIO(raw))
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise UsageError(f"{where} is not a readable Parquet file: {exc}") from exc
    try:
        return read_csv(raw, where=where, sep=CSV_SEPARATORS[fmt])
    except DataError as exc:
        raise UsageError(str(exc)) from exc


def read_texts(source: str, *, fmt: str | None = None, column: str | None = None) -> list[str]:
    """The texts to label, in input order: a CSV, TSV or Parquet file's `column` (default
    `text`), or a text file with one review a line; `source` "-" reads standard input
    (text unless `fmt` says). Pipes and devices (/dev/stdin) are read as files are."""
    fmt = input_format(source, fmt)
    where = "standard input" if source == "-" else f"--input {source!r}"
    if fmt == "text" and column is not None:
        raise UsageError(
            f"--text-column {column!r}: {where} is read as plain text, one review a line, which has no columns; "
            f"give a .csv, .tsv or .parquet file, or --format csv, tsv or parquet"
        )
    raw = sys.stdin.buffer.read() if source == "-" else _read_input(source, where=where)
    if fmt == "text":
        return _lines(raw, where=where)
    column = column or "text"
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(io.BytesIO(raw))
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise UsageError(f"{where} is not a readable Parquet file: {exc}") from exc
    else:
        try:
            frame = read_csv(raw, where=where, sep=CSV_SEPARATORS[fmt])
        except DataError as exc:
            raise UsageError(str(exc)) from exc
    if column not in frame.columns:
        raise UsageError(
            f"{where} has no column {column!r}; its columns are {list(frame.columns)}: choose one with --text-column"
        )
    return _checked(frame[column].tolist(), where=f"{where}, column {column!r}", unit="row")


def _read_input(source: str, *, where: str) -> bytes:
    path = Path(source)
    if path.is_dir():
        raise UsageError(f"{where} is a folder, not a file")
    try:
        return path.read_bytes()  # a regular file, a pipe or a device alike
    except FileNotFoundError:
        raise UsageError(f"{where} does not exist") from None
    except OSError as exc:
        raise UsageError(f"{where} cannot be read: {exc.strerror or exc}") from exc


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
    missing = [i for i, value in enumerate(values) if value is None or (isinstance(value, float) and np.isnan(value))]
    if missing:
        raise UsageError(f"{where}: {unit} {missing[0] + first} has no text (null; {len(missing)} such in all)")
    bad = [i for i, value in enumerate(values) if not isinstance(value, str)]
    if bad:
        shown = values[bad[0]]
        shown = shown.tolist() if isinstance(shown, np.ndarray) else shown  # a Parquet list cell
        raise UsageError(f"{where}: {unit} {bad[0] + first} holds {shown!r}, not text ({len(bad)} such)")
    empty = [i for i, value in enumerate(values) if not value.strip()]
    if empty:
        raise UsageError(
            f"{where}: {unit} {empty[0] + first} is empty ({len(empty)} empty in all); every {unit} is one "
            "review: remove the empty ones or give them text"
        )
    return values


# --- writing the output --------------------------------------------------------------------


def output_format(path: str | None) -> str:
    if path is None:
        return "csv"  # to standard output
    fmt = OUTPUT_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UsageError(f"--output {path!r}: give a file ending in {' or '.join(OUTPUT_FORMATS)}")
    return fmt


def check_output(path: str | None, *, run: TrainedRun, input_source: str | None = None, force: bool = False) -> str:
    """The output's format, once `path` is known to be writable without harm: never the
    input, nothing in the run folder, an existing file only with `force`, not a folder, not
    under a file. Checked before any work, so that nothing is computed to be lost."""
    fmt = output_format(path)
    if path is None:
        return fmt
    out = Path(path)
    resolved = out.resolve()
    if input_source not in (None, "-") and resolved == Path(input_source).resolve():
        raise UsageError(f"--output {path!r} is the input: give a new file, or the predictions would replace it")
    if resolved.is_relative_to(run.run_dir.resolve()):
        raise UsageError(
            f"--output {path!r} is inside the run folder {str(run.run_dir)!r}, whose files the study wrote "
            "(predictions.parquet is its test predictions, which the report reads): write elsewhere"
        )
    layout.check_target(out, option="--output")  # nor in any other run, nor among the study's files
    if out.is_dir():
        raise UsageError(f"--output {path!r} is a folder: give a file's name (e.g. {str(out / 'predictions.csv')!r})")
    blocking = next((parent for parent in out.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise UsageError(f"--output {path!r}: {str(blocking)!r} is a file, not a folder")
    if out.exists() and not force:
        raise UsageError(f"--output {path!r} already exists; give a new file, or --force to replace it")
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


def base_model_source(run: TrainedRun, base: str | None = None) -> str:
    """Where an adapter's base model loads from: `base` where the user names one (a folder,
    a hub id, or `package:NAME`, which the user may name), else the study's fetched copy of
    a hub model when it is this model's (results/sources/models/ beside results/runs/), else
    the folder or hub id its adapter config names. A whole model's run: its own folder.

    A run folder is data: what its files name is never resolved as `package:NAME`, which
    imports a module (sources.resolve_model_path), so no run folder can run code here."""
    if not run.adapter:
        if base is not None:
            raise UsageError(
                f"--base {base!r}: run {str(run.run_dir)!r} ({run.spec.method}) saved the whole model, which "
                f"loads from {run.model_dir} alone; leave --base out"
            )
        return str(run.model_dir)
    if base is not None:
        return _users_base(base)
    config_path = run.model_dir / "adapter_config.json"
    try:
        named = json.loads(config_path.read_text()).get("base_model_name_or_path")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise UsageError(f"{config_path} is not an adapter config PEFT wrote: {exc}") from exc
    hint = f"pass --base PATH_OR_HUB_ID, the model the run was trained on ({_recorded_base(run)})"
    if not isinstance(named, str) or not named:
        raise UsageError(f"{config_path} names no base model (base_model_name_or_path); {hint}")
    if named.startswith(PACKAGE_PREFIX):
        raise UsageError(
            f"{config_path} names its base {named!r}: ftcompare never imports a module a run folder names "
            f"(the study saves a base as a folder or a hub id); {hint}"
        )
    if is_hub_id(named):
        folder = layout.study_folder(run.run_dir)
        if folder is not None:
            fetched = layout.fetched_model_folder(folder / "results", named)
            marker = fetched / FETCHED_FROM
            if marker.is_file() and json.loads(marker.read_text()).get("repo_id") == named:
                return str(fetched)
        return named
    try:
        check_model_source(named)
    except ModelSourceError as exc:
        raise UsageError(
            f"the base model run {str(run.run_dir)!r}'s adapter names ({config_path}) cannot load: {exc}; it was "
            f"moved or deleted since training? {hint}"
        ) from exc
    return named


def _users_base(base: str) -> str:
    """--base as a folder or hub id that loads without `package:` (resolved here, once)."""
    try:
        source = resolve_model_path(base)
        check_model_source(source)
    except ModelSourceError as exc:
        raise UsageError(f"--base {base!r}: {exc}") from exc
    if source.startswith(PACKAGE_PREFIX):  # a package whose model path reads as a package again
        raise UsageError(f"--base {base!r} resolves to {source!r}, not a folder or a hub id")
    return source


def _recorded_base(run: TrainedRun) -> str:
    return f"its train.json records model_name_or_path = {run.spec.model_name_or_path!r}"


def check_weights(run: TrainedRun) -> None:
    """The run's saved weights are there and whole, or UsageError naming the file: a
    missing or truncated file would otherwise fail deep inside the loaders."""
    names = ADAPTER_WEIGHT_FILES if run.adapter else WEIGHT_FILES
    found = next((run.model_dir / name for name in names if (run.model_dir / name).is_file()), None)
    if found is None:
        raise UsageError(
            f"{run.model_dir} holds no {'adapter ' if run.adapter else ''}weights (one of {list(names)}): the run "
            f"folder is incomplete; train it again (`snakemake --forcerun {run.run_dir / 'train.json'}`)"
        )
    if found.suffix == ".safetensors" and (problem := safetensors_problem(found)) is not None:
        raise UsageError(
            f"{found} is damaged ({problem}): copied or written only in part? Copy the run again, or train it again "
            f"(`snakemake --forcerun {run.run_dir / 'train.json'}`)"
        )


def load_for_inference(
    run: TrainedRun, *, device: Any, merged: bool = False, base: str | None = None
) -> tuple[Any, Any]:
    """The run's model, as trained or `merged` into its base, on `device`, and its precision
    (`base`: the user's --base, see base_model_source)."""
    from huggingface_hub.errors import HFValidationError
    from safetensors import SafetensorError

    from ftcompare.model import build as models

    spec = run_spec(run, base)
    check_weights(run)
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
    except (OSError, HFValidationError, SafetensorError) as exc:  # the base or the saved files did not load
        where = f"the base model {spec.model_name_or_path!r}" if run.adapter else str(run.model_dir)
        why = " ".join(str(exc).split())[:500]  # one line: the loaders' messages span several
        raise UsageError(
            f"run {str(run.run_dir)!r}: {where} does not load ({type(exc).__name__}: {why}); "
            + (
                "a hub id needs the network or the Hugging Face cache (HF_HUB_OFFLINE); pass --base with a local "
                "copy of the model it was trained on"
                if run.adapter
                else "copy the run again, or train it again"
            )
        ) from exc
    return model, precision


def run_spec(run: TrainedRun, base: str | None = None) -> RunSpec:
    """The run's settings with its base model where it loads from here (base_model_source)."""
    return dataclasses.replace(run.spec, model_name_or_path=base_model_source(run, base))


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


def predict(
    run: TrainedRun,
    texts: list[str],
    *,
    pairs: list[str] | None = None,
    device: Any | None = None,
    base: str | None = None,
) -> pd.DataFrame:
    """One row per text, in order: `row`, `prediction` (the class's name where the data
    named its classes, else its number) and `prob_<class>` for each class. The texts (and
    for a sentence-pair run, each one's second text in `pairs`) are tokenized as the
    tokenize job did and cut to the run's text budget as the evaluate job cuts them
    (models.fit_text_budget); non-finite logits are refused as it refuses them
    (inference.check_finite)."""
    from ftcompare.data import TokenizedSplit, encode, encode_pairs, load_tokenizer, uses_segment_ids
    from ftcompare.evaluate import softmax
    from ftcompare.model import NonFiniteLogits, check_finite, fit_text_budget, predict_logits, select_device

    columns = run.text_columns
    if run.pair and pairs is None:
        raise UsageError(
            f"run {str(run.run_dir)!r} classifies sentence pairs ({columns['text']!r} and {columns['text_pair']!r}): "
            "give each text its second text (--pair-column)"
        )
    if pairs is not None and not run.pair:
        raise UsageError(f"run {str(run.run_dir)!r} classifies one text a row ({columns['text']!r}): give no pairs")
    if pairs is not None and len(pairs) != len(texts):
        raise UsageError(f"{len(texts)} texts and {len(pairs)} second texts: give one second text per text")
    device = device or select_device()
    spec = run_spec(run, base)
    tokenizer, pad_token_id = load_tokenizer(str(run.model_dir), max_length=spec.max_length)
    pair_tokens = pair_layout = pair_types = None
    if pairs is None:
        ids = encode(tokenizer, texts)
    else:
        ids, pair_tokens, pair_layout, pair_types = encode_pairs(tokenizer, texts, pairs)
        # Segment ids where the model reads them, as the tokenize job decides (its config
        # is saved beside the weights, an adapter's included).
        pair_types = pair_types if uses_segment_ids(str(run.model_dir)) else None
    split = TokenizedSplit(
        input_ids=[np.asarray(row, dtype=np.int64) for row in ids],
        labels=np.zeros(len(ids), dtype=np.int64),
        lengths=np.array([len(row) for row in ids], dtype=np.int64),
        pair_tokens=pair_tokens,
        pair_layout=pair_layout,
        pair_types=pair_types,
    )
    split = fit_text_budget(split, spec)
    model, precision = load_for_inference(run, device=device, base=base)
    logits = predict_logits(
        model,
        split,
        batch_size=spec.eval_batch_size,
        max_tokens=spec.eval_max_tokens_per_batch,
        pad_token_id=pad_token_id,
        pad_to_multiple_of=spec.pad_to_multiple_of,
        device=device,
        precision=precision,
    )
    try:
        check_finite(logits, what="reviews")
    except NonFiniteLogits as exc:
        raise UsageError(f"run {str(run.run_dir)!r} cannot label these texts: {exc}") from exc
    probabilities, predicted = softmax(logits), logits.argmax(axis=1)
    names = run.label_names or list(range(run.num_labels))
    frame = pd.DataFrame({"row": np.arange(len(texts)), "prediction": [names[k] for k in predicted]})
    for k, name in enumerate(names):
        frame[f"prob_{name}"] = probabilities[:, k]
    return frame


# --- export --------------------------------------------------------------------------------


def _study_file(run: TrainedRun, recorded: str | None) -> Path | None:
    """A path a record holds, relative to the study's folder (where Snakemake ran: the
    folder holding results/), found from the run folder results/runs/<task>/<model>/<strategy>/seed<N>."""
    if not recorded:
        return None
    path = Path(recorded)
    if not path.is_absolute():
        folder = layout.study_folder(run.run_dir)
        path = folder / path if folder is not None else path
    return path if path.exists() else None


def data_summary(run: TrainedRun) -> dict[str, Any] | None:
    """The summary of the data the run learnt from, via its tokenized data's record."""
    tokenized = _study_file(run, run.train.get("tokenized_dir"))
    if tokenized is None or not (tokenized / "tokenization.json").is_file():
        return None
    data_dir = _study_file(run, tokenization_meta(tokenized).get("data"))
    summary = None if data_dir is None else data_dir / "summary.json"
    return json.loads(summary.read_text()) if summary is not None and summary.is_file() else None


def check_export_folder(run: TrainedRun, out: str | Path, *, force: bool = False) -> Path:
    """`out` as a folder export may write: new, or empty, or with `force` an existing one
    to replace; never the working folder or one above it, nor one holding or inside the
    run folder. Checked before the merge, which takes minutes on a large model."""
    out = Path(out)
    resolved, run_dir = out.resolve(), run.run_dir.resolve()
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise UsageError(f"--merged {str(out)!r} is the working folder or holds it: give a new folder's name")
    if run_dir.is_relative_to(resolved) or resolved.is_relative_to(run_dir):
        raise UsageError(
            f"--merged {str(out)!r} holds or is inside the run folder {str(run.run_dir)!r}: write elsewhere"
        )
    layout.check_target(out, option="--merged")  # nor any other run, nor the study's files
    blocking = next((parent for parent in out.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise UsageError(f"--merged {str(out)!r}: {str(blocking)!r} is a file, not a folder")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--merged {str(out)!r} is a file; give a new folder")
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(
            f"--merged {str(out)!r} already exists and is not empty; give a new folder, or --force to replace it"
        )
    return out


def export_merged(run: TrainedRun, out: str | Path, *, force: bool = False, base: str | None = None) -> Path:
    """Write the run's adapter merged into its base to the new folder `out`: a plain
    transformers model (weights, config with the class names, tokenizer, model card) that
    `pipeline("text-classification", model=out)` loads without PEFT. Merged on the CPU in
    fp32, so the saved weights are full precision whatever the run trained in."""
    import torch
    from transformers import AutoTokenizer

    from ftcompare.evaluate import write_model_card

    out = Path(out)
    if not run.adapter:
        raise UsageError(
            f"run {str(run.run_dir)!r} ({run.spec.method}) saved the whole model: {run.model_dir} already holds "
            f'a plain transformers model, which pipeline("text-classification", model="{run.model_dir}") loads'
        )
    check_export_folder(run, out, force=force)
    merged, _ = load_for_inference(run, device=torch.device("cpu"), merged=True, base=base)
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
            folder=str(out.resolve()),  # absolute, as the run's own card: it works from any folder
            run_dir=str(run.run_dir.resolve()),
            merged=True,
        )
        if out.exists():
            shutil.rmtree(out)  # empty, or replaced with --force (check_export_folder)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out
