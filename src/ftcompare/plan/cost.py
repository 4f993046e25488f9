"""What a study costs before it runs: the tokens each job processes, the throughput it will
run at, its estimated seconds, and the time limit (`runtime`) a scheduler gives it.

Tokens come from the tokenized cache where it exists (`tokenization.json`), else from the
data's rows and an estimate of its lengths (`throughput.yaml`, each figure with its
source). Throughput per model, method family and device comes, in order, from the study's
finished runs (their recorded tokens/s), a calibration (`ftcompare calibrate`, which
times a few steps on the device: ftcompare.use.calibration), and the assumed figures of
`throughput.yaml` (BENCHMARKS.md's H200 rows). Every estimate says which it used.

Torch-free: `ftcompare plan` and the Snakefile's resource functions run it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ftcompare.contract import ConfigError
from ftcompare.data import SPLITS, tokenization_meta
from ftcompare.methods import METHOD_TABLE
from ftcompare.plan.matrix import Cell

FIGURES_PATH = Path(__file__).with_name("throughput.yaml")
CALIBRATION_FILE = "calibration.json"  # under the study's results/
STAGES = ("train", "evaluate")
# A job whose size cannot be known (a hub dataset no figure describes, nothing fetched):
# the flat limits the rules had before their size was estimated, in minutes.
FLAT_MINUTES = {"trial": 240, "finetune": 240, "evaluate": 60}


@functools.cache
def figures(path: str | Path = FIGURES_PATH) -> dict[str, Any]:
    """The assumed figures (throughput.yaml)."""
    return yaml.safe_load(Path(path).read_text())


def family(method: str, quantization: Mapping[str, Any] | None = None) -> str:
    """The method family a throughput figure stands for: a 4-bit base is its own (its
    dequantisation sets its pace), otherwise the method's family (ftcompare.methods.catalogue)."""
    if quantization:
        return "quantized"
    if method not in METHOD_TABLE:
        raise ConfigError(f"unknown method {method!r}; known: {list(METHOD_TABLE)}")
    return METHOD_TABLE[method].family


def same_device(a: str, b: str) -> bool:
    """Whether two device names are one device: equal ignoring case, or one the other's
    model name ("H200" and "NVIDIA H200")."""
    a, b = a.strip().lower(), b.strip().lower()
    return bool(a and b) and (a == b or a in b.split() or b in a.split() or a.endswith(" " + b) or b.endswith(" " + a))


# --------------------------------------------------------------------------- tokens


@dataclasses.dataclass(frozen=True)
class Tokens:
    """The tokens of a cell's three splits (one pass over each), and where they come from."""

    train: float
    validation: float
    test: float
    source: str
    rows: int = 0  # examples in the three splits together
    train_rows: int = 0

    @property
    def mean_length(self) -> float:
        return (self.train + self.validation + self.test) / self.rows if self.rows else 0.0


def tokens_from_cache(meta: Mapping[str, Any]) -> Tokens | None:
    """A tokenized cache's counts (tokenization.json); a cache written before the counts
    were recorded gives rows x median length. None without every split."""
    splits = meta.get("splits") or {}
    if not all(split in splits for split in SPLITS):
        return None
    exact = all("tokens" in splits[split] for split in SPLITS)

    def count(stats: Mapping[str, Any]) -> float:
        return float(stats["tokens"]) if "tokens" in stats else float(stats["rows"]) * float(stats["median_length"])

    return Tokens(
        *(count(splits[split]) for split in SPLITS),
        source="tokenized cache" if exact else "tokenized cache (rows x median length)",
        rows=sum(int(splits[split]["rows"]) for split in SPLITS),
        train_rows=int(splits["train"]["rows"]),
    )


def hub_key(data: Mapping[str, Any]) -> str:
    """A hub dataset's name in throughput.yaml: name, or name/configuration."""
    return f"{data['name']}/{data['config']}" if data.get("config") else str(data["name"])


def split_rows(data: Mapping[str, Any], source_rows: Mapping[str, int]) -> dict[str, int]:
    """The rows prepare_data makes of a source's (ftcompare.data.splits.prepare): the subsets,
    then validation carved from train where the source has none (as train_test_split
    rounds: up)."""
    train = min(data.get("train_size") or source_rows["train"], source_rows["train"])
    test = min(data.get("test_size") or source_rows["test"], source_rows["test"])
    if "validation" in source_rows:
        return {"train": train, "validation": source_rows["validation"], "test": test}
    validation = math.ceil(train * data["validation_fraction"])
    return {"train": train - validation, "validation": validation, "test": test}


def _local_files(data: Mapping[str, Any]) -> dict[str, Path]:
    roles = {"train": data.get("train"), "validation": data.get("validation"), "test": data.get("test")}
    return {role: Path(path) for role, path in roles.items() if path}


def _local_rows_and_chars(data: Mapping[str, Any]) -> tuple[dict[str, int], float]:
    """A local source's rows per file and mean characters per example (both text columns)."""
    import pandas as pd

    columns = [data["text_column"], *([data["text_pair_column"]] if data.get("text_pair_column") else [])]
    rows, chars, count = {}, 0.0, 0
    for role, path in _local_files(data).items():
        if data["source"] == "parquet":
            frame = pd.read_parquet(path, columns=columns)
        else:
            frame = pd.read_csv(path, usecols=columns, encoding="utf-8-sig")
        rows[role] = len(frame)
        chars += sum(float(frame[c].astype(str).str.len().sum()) for c in columns)
        count += len(frame)
    return rows, chars / max(count, 1)


def estimated_tokens(data: Mapping[str, Any], *, max_length: int, summary: Mapping[str, Any] | None = None) -> Tokens:
    """A cell's tokens from its data's size and an estimate of its lengths, before any
    tokenized cache: rows from the prepared data's summary where it exists, else the hub
    dataset's split sizes (throughput.yaml) or the local files; the mean length from
    throughput.yaml for a hub dataset, else the files' characters per token. Lengths are
    capped at max_length. Raises ConfigError where nothing describes the data."""
    figs = figures()
    if data["source"] == "hub":
        key = hub_key(data)
        if key not in figs["mean_tokens"] or (summary is None and key not in figs["hub_rows"]):
            raise ConfigError(
                f"no size or length is known for hub dataset {key!r} before it is fetched (ftcompare/throughput.yaml "
                f"knows {sorted(figs['hub_rows'])}); run the fetch and tokenize jobs first, or add its figures there"
            )
        mean, length_source = figs["mean_tokens"][key]["tokens"], figs["mean_tokens"][key]["from"]
        if summary is None:
            from ftcompare.data import hub_splits

            known = figs["hub_rows"][key]
            rows = split_rows(data, {role: known[split] for role, split in hub_splits(data).items()})
            rows_source = "the dataset card's rows"
    elif data["source"] == "aclimdb":
        mean, length_source = figs["mean_tokens"]["stanfordnlp/imdb"]["tokens"], "IMDB's (aclImdb is IMDB)"
        if summary is None:
            rows, rows_source = split_rows(data, {"train": 25000, "test": 25000}), "aclImdb's 25,000 + 25,000 reviews"
    else:
        file_rows, chars = _local_rows_and_chars(data)
        ratio = figs["chars_per_token"]["value"]
        mean = chars / ratio + figs["special_tokens"]
        length_source = f"{chars:.0f} characters / {ratio} per token ({figs['chars_per_token']['from']})"
        if summary is None:
            rows, rows_source = split_rows(data, file_rows), "the files' rows"
    if summary is not None:
        rows, rows_source = {split: int(summary["rows"][split]) for split in SPLITS}, "the prepared data's rows"
    per_example = min(float(mean), float(max_length))
    return Tokens(
        *(rows[split] * per_example for split in SPLITS),
        source=f"estimate: {rows_source} x {per_example:.0f} tokens ({length_source})",
        rows=sum(rows[split] for split in SPLITS),
        train_rows=rows["train"],
    )


def cell_tokens(
    data: Mapping[str, Any],
    *,
    max_length: int,
    tokenized_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
) -> Tokens:
    """A cell's tokens: its tokenized cache's where it exists, else estimated (its prepared
    data's rows where those exist)."""
    if tokenized_dir is not None and (Path(tokenized_dir) / "tokenization.json").is_file():
        found = tokens_from_cache(tokenization_meta(tokenized_dir))
        if found is not None:
            return found
    summary = None
    if data_dir is not None and (summary_path := Path(data_dir) / "summary.json").is_file():
        summary = json.loads(summary_path.read_text())
    return estimated_tokens(data, max_length=max_length, summary=summary)


# --------------------------------------------------------------------------- throughput


@dataclasses.dataclass(frozen=True)
class Rate:
    """Tokens per second for one stage, and where the figure comes from; for training,
    also the seconds each optimizer step costs whatever its tokens (the optimizer's update,
    launching the step), where measured: a task of short texts takes more steps per token."""

    tokens_per_s: float
    source: str
    step_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Figure:
    """One measured throughput: a model (its name_or_path), a method family, a device, a stage."""

    model: str
    family: str
    device: str
    stage: str
    tokens_per_s: float
    step_s: float = 0.0


def run_figures(results: str | Path) -> list[Figure]:
    """The throughput each finished run of the study recorded (train.json's tokens/s,
    eval.json's eval_tokens_per_s), tuning trials included."""
    results = Path(results)
    found: list[Figure] = []
    records = [*results.glob("runs/*/*/*/seed*/train.json"), *results.glob("tuning/*/*/trials/*/*/seed*/train.json")]
    for path in records:
        try:
            record = json.loads(path.read_text())
            settings, device = record["config"], record["provenance"]["device"]
            key = (settings["model_name_or_path"], family(settings["method"], settings.get("quantization")), device)
        except (OSError, ValueError, KeyError, TypeError, ConfigError):
            continue  # a record being written, or of a format without these: not a measurement
        if record.get("status") == "ok" and (rate := (record.get("metrics") or {}).get("tokens_per_s")):
            found.append(Figure(*key, "train", float(rate)))
        evaluation = path.with_name("eval.json")
        if evaluation.is_file():
            try:
                metrics = json.loads(evaluation.read_text()).get("metrics") or {}
            except (OSError, ValueError):
                continue
            if rate := metrics.get("eval_tokens_per_s"):
                found.append(Figure(*key, "evaluate", float(rate)))
    return found


def read_calibration(path: str | Path) -> list[Figure]:
    """A calibration file's figures (ftcompare.use.calibration writes it); none if it is absent."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())["figures"]
        return [Figure(**entry) for entry in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a calibration file ({exc}); rerun `ftcompare calibrate`") from None


def write_calibration(path: str | Path, found: Iterable[Figure], *, merge: bool = True) -> Path:
    """Store `found`, replacing figures of the same model, family, device and stage."""
    path = Path(path)
    kept = read_calibration(path) if merge else []
    new = list(found)
    keys = {(f.model, f.family, f.device, f.stage) for f in new}
    figures_out = [f for f in kept if (f.model, f.family, f.device, f.stage) not in keys] + new
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"figures": [dataclasses.asdict(f) for f in figures_out]}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


class Throughput:
    """Tokens/s by model, method family, device and stage: the study's finished runs
    first (their median), then the calibration, then the assumed figures."""

    def __init__(self, *, measured: Iterable[Figure] = (), calibrated: Iterable[Figure] = ()) -> None:
        self.measured, self.calibrated = list(measured), list(calibrated)

    @classmethod
    def of_study(cls, results: str | Path, *, calibration: str | Path | None = None) -> Throughput:
        results = Path(results)
        return cls(
            measured=run_figures(results),
            calibrated=read_calibration(calibration if calibration is not None else results / CALIBRATION_FILE),
        )

    def default_device(self) -> str:
        """The device to plan for where none is named: the calibration's, else the assumed figures'."""
        return self.calibrated[-1].device if self.calibrated else figures()["default_device"]

    def rate(self, *, model: str, family: str, device: str, stage: str) -> Rate:
        def matching(found: list[Figure]) -> list[Rate]:
            return [
                Rate(f.tokens_per_s, "calibrated", f.step_s)
                for f in found
                if f.model == model and f.family == family and f.stage == stage and same_device(f.device, device)
            ]

        if rates := matching(self.measured):
            median = statistics.median(r.tokens_per_s for r in rates)
            return Rate(median, f"measured: {len(rates)} finished run(s)")
        if rates := matching(self.calibrated):
            return rates[-1]
        assumed = figures()["devices"]
        name = next((d for d in assumed if same_device(d, device)), None)
        table = assumed[name or figures()["default_device"]]
        entry = table["train" if stage == "train" else "evaluate"][family]
        where = entry["from"] + ("" if model == table["model"] else f", measured on {table['model']}")
        if name is None:
            where += f" (nothing known for device {device!r}: {figures()['default_device']}'s figure)"
        return Rate(float(entry["tokens_per_s"]), f"assumed: {where}")


# --------------------------------------------------------------------------- jobs


@dataclasses.dataclass(frozen=True)
class Estimate:
    """One job's size: the tokens it processes, its seconds, and where each comes from."""

    tokens: float
    seconds: float
    tokens_source: str
    rate_source: str


def startup_seconds() -> float:
    return float(figures()["job_startup_s"])


def steps_per_epoch(tokens: Tokens, *, batch_size: int, max_tokens_per_batch: int | None) -> int:
    """Optimizer steps per epoch: batches of examples of about the mean length, as many as
    the token budget holds, at most batch_size (ftcompare.data.batching groups by length)."""
    if not tokens.train_rows:
        return 0
    mean = max(tokens.train / tokens.train_rows, 1.0)
    rows = batch_size if max_tokens_per_batch is None else max(1, min(batch_size, int(max_tokens_per_batch // mean)))
    return math.ceil(tokens.train_rows / rows)


def train_estimate(tokens: Tokens, *, spec: Any, train: Rate, evaluate: Rate) -> Estimate:
    """A fine-tune or trial (`spec`: its RunSpec): its epochs over the training split, each
    step's fixed cost, and validation after each epoch."""
    trained, validated = tokens.train * spec.epochs, tokens.validation * spec.epochs
    seconds = startup_seconds() + training_seconds(tokens, spec=spec, train=train) + validated / evaluate.tokens_per_s
    return Estimate(trained + validated, seconds, tokens.source, train.source)


def training_seconds(tokens: Tokens, *, spec: Any, train: Rate) -> float:
    """The optimizer steps alone (what a run's train.json records as train_time_s)."""
    steps = spec.epochs * steps_per_epoch(
        tokens, batch_size=spec.batch_size, max_tokens_per_batch=spec.max_tokens_per_batch
    )
    return steps * train.step_s + tokens.train * spec.epochs / train.tokens_per_s


def evaluate_estimate(tokens: Tokens, *, evaluate: Rate) -> Estimate:
    """An evaluate job: one pass over the test split."""
    return Estimate(
        tokens.test, startup_seconds() + tokens.test / evaluate.tokens_per_s, tokens.source, evaluate.source
    )


def runtime_minutes(seconds: float | None, *, attempt: int, settings: Mapping[str, Any], kind: str) -> int:
    """A job's time limit in minutes: its estimate times the safety factor, at least the
    floor, times the attempt (a job that ran out of time is retried with more); the flat
    limit of its kind where its size is unknown (`seconds` None)."""
    if seconds is None:
        return FLAT_MINUTES[kind] * attempt
    first = max(int(settings["min_runtime_minutes"]), math.ceil(seconds * float(settings["safety_factor"]) / 60))
    return first * attempt


def minutes(first_attempt: int) -> Callable[..., int]:
    """A rule's `runtime` (minutes) for a job whose size is not estimated, growing with
    each attempt: a job that ran out of time is retried with more."""
    return lambda wildcards, attempt: first_attempt * attempt


def group_of(seconds: float | None, *, settings: Mapping[str, Any]) -> str | None:
    """The group a short job runs in on a cluster (profiles/slurm: --group-components);
    None for a job estimated at or over the threshold, or of unknown size."""
    threshold = settings["group_under_minutes"]
    if seconds is None or threshold is None or seconds >= 60 * float(threshold):
        return None
    return "short"


# --------------------------------------------------------------------------- a study

KINDS = ("trial", "finetune", "evaluate")


class StudyCosts:
    """Every job's estimate in a study: what `ftcompare plan` prints, and what the rules'
    `runtime` and `group` ask (through ftcompare.plan.graph.StudyPlan). `cells`: each cell's checked
    config (ftcompare.plan.checks.checked_study); `settings`: the config's `cost` block."""

    def __init__(
        self,
        cells: Mapping[Any, Mapping[str, Any]],
        *,
        seeds: Iterable[int],
        settings: Mapping[str, Any],
        results: str | Path = "results",
        throughput: Throughput | None = None,
        device: str | None = None,
    ) -> None:
        from ftcompare.plan.preflight import cell_cache_keys

        self.cells, self.seeds, self.settings, self.results = cells, list(seeds), settings, Path(results)
        self.throughput = throughput if throughput is not None else Throughput.of_study(self.results)
        self.device = device or settings.get("device") or self.throughput.default_device()
        self.keys = {cell: cell_cache_keys(cfg) for cell, cfg in cells.items()}
        self._tokens: dict[tuple[Any, bool], Tokens | None] = {}
        self._specs: dict[tuple[Any, str, str | None], Any] = {}
        self.unknown: dict[Any, str] = {}  # cell -> why its size is unknown

    def tokenized_dir(self, cell: Any) -> Path:
        return self.results / "tokenized" / self.keys[cell][1]

    def tokens(self, cell: Any) -> Tokens | None:
        """The cell's tokens (looked up once per cell, and again once its cache appears);
        None where nothing describes its data."""
        cached = (self.tokenized_dir(cell) / "tokenization.json").is_file()
        if (cell, cached) not in self._tokens:
            cfg = self.cells[cell]
            try:
                found = cell_tokens(
                    cfg["data"],
                    max_length=cfg["training"]["max_length"],
                    tokenized_dir=self.tokenized_dir(cell),
                    data_dir=self.results / "data" / self.keys[cell][0],
                )
            except ConfigError as exc:
                found, self.unknown[cell] = None, str(exc)
            self._tokens[(cell, cached)] = found
        return self._tokens[(cell, cached)]

    def spec(self, cell: Any, strategy: str, trial: str | None = None) -> Any:
        """The run settings a job trains with (a trial's: its grid values and tuning.epochs)."""
        key = (cell, strategy, trial)
        if key not in self._specs:
            from ftcompare.plan.config import resolve_run
            from ftcompare.plan.tuning import trial_spec, trials

            cfg = self.cells[cell]
            if trial is None:
                self._specs[key] = resolve_run(cfg, strategy=strategy, seed=self.seeds[0] if self.seeds else 0)
            else:
                found = next(t for t in trials(cfg).get(strategy, []) if t.id == trial)
                self._specs[key] = trial_spec(cfg, found, seed=0)
        return self._specs[key]

    def rates(self, spec: Any) -> tuple[Rate, Rate]:
        fam = family(spec.method, spec.quantization)
        return tuple(
            self.throughput.rate(model=spec.model_name_or_path, family=fam, device=self.device, stage=stage)
            for stage in STAGES
        )

    def estimate(self, kind: str, cell: Any, strategy: str, trial: str | None = None) -> Estimate | None:
        """One job's estimate; None where the cell's size is unknown."""
        tokens = self.tokens(cell)
        if tokens is None:
            return None
        spec = self.spec(cell, strategy, trial if kind == "trial" else None)
        train, evaluate = self.rates(spec)
        if kind == "evaluate":
            return evaluate_estimate(tokens, evaluate=evaluate)
        return train_estimate(tokens, spec=spec, train=train, evaluate=evaluate)

    def runtime(self, kind: str, cell: Any, strategy: str, trial: str | None = None, *, attempt: int = 1) -> int:
        """The job's time limit in minutes (runtime_minutes)."""
        found = self.estimate(kind, cell, strategy, trial)
        return runtime_minutes(
            None if found is None else found.seconds, attempt=attempt, settings=self.settings, kind=kind
        )

    def runtime_of(self, kind: str) -> Callable[..., int]:
        """A rule's `runtime`: its job's time limit, from its wildcards and attempt."""
        return lambda wildcards, attempt: self.runtime(
            kind, Cell(wildcards.task, wildcards.model), wildcards.strategy, wildcards.get("trial"), attempt=attempt
        )

    def group_of(self, kind: str) -> Callable[..., str | None]:
        """A rule's `group`: the group of its job on a cluster, from its wildcards."""
        return lambda wildcards: self.group(
            kind, Cell(wildcards.task, wildcards.model), wildcards.strategy, wildcards.get("trial")
        )

    def group(self, kind: str, cell: Any, strategy: str, trial: str | None = None) -> str | None:
        found = self.estimate(kind, cell, strategy, trial)
        group = group_of(None if found is None else found.seconds, settings=self.settings)
        if kind == "evaluate" and group is not None:
            # Snakemake submits a group once every member's inputs exist: the evaluation of a
            # fine-tune that is a job of its own would hold the whole group until that ends.
            return self.group("finetune", cell, strategy)
        return group

    def rows(self) -> list[dict[str, Any]]:
        """The plan by task x model x strategy: jobs of each kind, the tokens they process
        (all of them together), their seconds, and the sources."""
        from ftcompare.plan.tuning import trials

        out = []
        for cell, cfg in self.cells.items():
            cell_trials = trials(cfg)
            tuning_seeds = len(cfg["tuning"]["seeds"]) if cell_trials else 0
            for strategy in cfg["strategies"]:
                jobs = {
                    "trial": [(t.id, tuning_seeds) for t in cell_trials.get(strategy, [])],
                    "finetune": [(None, len(self.seeds))],
                    "evaluate": [(None, len(self.seeds))],
                }
                row: dict[str, Any] = {"task": cell.task, "model": cell.model, "strategy": strategy}
                for kind, entries in jobs.items():
                    count = sum(n for _, n in entries)
                    found = [(self.estimate(kind, cell, strategy, trial), n) for trial, n in entries if n]
                    known = [(e, n) for e, n in found if e is not None]
                    row[f"{kind}_jobs"] = count
                    row[f"{kind}_tokens"] = sum(e.tokens * n for e, n in known) if len(known) == len(found) else None
                    row[f"{kind}_s"] = sum(e.seconds * n for e, n in known) if len(known) == len(found) else None
                    if known:
                        row["tokens_source"] = known[0][0].tokens_source
                        row[f"{kind}_rate_source"] = known[0][0].rate_source
                row.setdefault("tokens_source", self.unknown.get(cell, ""))
                out.append(row)
        return out
