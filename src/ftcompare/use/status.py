"""`ftcompare status`: one table of every run and trial of a study, from what its jobs write.

It reads, under the results folder, the study's plan (plan.json, written when Snakemake
starts the study: every planned run and trial, so that those not started show as
waiting), each job's progress file (ftcompare.train.progress) and the finished records
(train.json, eval.json). Nothing else: it works on a login node while SLURM runs the jobs
elsewhere, imports neither torch nor pandas, and reads a thousand runs in well under 2 s
(bench/status_check.py).

A progress file that says `running` is believed only while its job lives: on the host
that wrote it, while its process exists; from another host, while the file is younger
than STALE_HEARTBEATS heartbeats (the job refreshes it every heartbeat, ftcompare.train.progress).
Otherwise the run shows as `died`. A progress file that cannot be read as one is passed
over with a note under the table. Runs the plan does not list (a task, model or strategy
the config no longer has) are listed apart, and counted apart.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import socket
import statistics
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ftcompare.contract import PLAN_FILE

# A job refreshes its progress file every heartbeat; past this many, it is gone. Generous:
# a shared file system may show a file late, and clocks differ between hosts.
STALE_HEARTBEATS = 4
# `trained`: training ended ok, its evaluation is next.
STATUSES = ("running", "trained", "ok", "failed", "skipped", "died", "waiting")
# `--watch`: the table reads every run's files; more often than this is a busy loop.
MIN_WATCH_S = 1.0


class StudyNotFound(FileNotFoundError):
    """The folder given is not a study's results folder, nor holds one; the message says what to pass."""


@dataclasses.dataclass(kw_only=True)
class Row:
    task: str
    model: str
    strategy: str
    seed: int
    trial: str | None = None
    status: str = "waiting"
    progress: str = ""
    eta_s: float | None = None
    # The task's primary metric (data.metric): the best validation score and the test score are on it.
    metric: str = "accuracy"
    best_val: float | None = None
    test_score: float | None = None
    reason: str | None = None
    # Wall seconds a finished job took (started_at to finished_at), or a running one's
    # elapsed time plus its ETA: the study's ETA counts waiting jobs at such lengths.
    took_s: float | None = None
    elapsed_s: float | None = None  # a running job's time so far
    # Not in the plan: a run of a task, model or strategy the config no longer has.
    leftover: bool = False
    note: str | None = None  # a file passed over, for the lines under the table


# --------------------------------------------------------------------------- reading


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            found = json.load(handle)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _age(progress: Mapping[str, Any], now: float) -> float:
    """Seconds since the job last wrote `progress`; never negative: a host whose clock runs
    ahead writes times in the future."""
    return max(0.0, now - _field(progress, "updated_at", default=0.0))


def _field(progress: Mapping[str, Any], key: str, *, default: float) -> float:
    """A number of `progress` (`default` where it is null or absent), or ProgressError naming the field."""
    value = progress.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProgressError(f"{key} = {value!r} is not a number")
    return float(value)


class ProgressError(ValueError):
    """A progress file whose fields are not what ftcompare.train.progress writes."""


def _alive(progress: Mapping[str, Any], now: float, host: str) -> bool:
    """Whether the job that writes `progress` still runs (see the module's docstring)."""
    heartbeat = _field(progress, "heartbeat_s", default=30.0) or 30.0
    fresh = _age(progress, now) <= STALE_HEARTBEATS * heartbeat
    if progress.get("host") != host:
        return fresh
    try:
        os.kill(int(progress["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        pass  # another user's process, or no pid: the file's age decides
    return fresh


def _seconds(provenance: Mapping[str, Any] | None) -> float | None:
    try:
        started = datetime.datetime.fromisoformat(provenance["started_at"])
        finished = datetime.datetime.fromisoformat(provenance["finished_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return (finished - started).total_seconds()


def _first_line(reason: Any) -> str | None:
    if not reason:
        return None
    return str(reason).strip().splitlines()[0]


def _from_progress(row: Row, progress: Mapping[str, Any], *, now: float, host: str) -> bool:
    """Fill `row` from a job's progress file; False when it says nothing current."""
    state = progress.get("state")
    if state == "running":
        if not _alive(progress, now, host):
            age = _age(progress, now)
            row.status, row.reason = "died", f"no sign of its job for {_duration(age)} ({progress.get('host')})"
        else:
            row.status = "running"
            # Times from the job's host: its clock may differ from ours, so neither an age
            # nor an elapsed time counts below zero.
            row.elapsed_s = max(0.0, now - _field(progress, "started_at", default=now))
            eta = _field(progress, "eta_s", default=math.nan)
            if not math.isnan(eta):
                row.eta_s = max(0.0, eta - _age(progress, now))
                row.took_s = row.elapsed_s + row.eta_s
    elif state == "stopped":
        row.status, row.reason = "died", _first_line(progress.get("reason")) or "stopped"
    else:
        return False
    phase, batches = progress.get("phase"), progress.get("batches")
    if phase in ("testing", "validating") and batches:
        row.progress = f"{'test' if phase == 'testing' else 'val'} {batches[0]}/{batches[1]}"
    elif progress.get("total_steps"):
        row.progress = f"{progress.get('step') or 0}/{progress['total_steps']}"
    else:
        row.progress = str(phase or "")
    # The best score on the task's metric (a job of this version writes it); accuracy is it where that is the metric.
    key = "best_val_score" if progress.get("metric") == row.metric else None
    key = "best_val_accuracy" if key is None and row.metric == "accuracy" else key
    if key is not None and progress.get(key) is not None:
        row.best_val = _field(progress, key, default=math.nan)
    return True


def _from_records(row: Row, train: Mapping[str, Any] | None, evaluation: Mapping[str, Any] | None) -> None:
    if train is None:
        return
    metrics = train.get("metrics") or {}
    if metrics.get("best_val_metric") == row.metric:
        row.best_val = metrics.get("best_val_score", row.best_val)
    elif row.metric == "accuracy":
        row.best_val = metrics.get("best_val_accuracy", row.best_val)
    steps = metrics.get("optimizer_steps")
    row.progress = f"{steps}/{steps}" if steps else ""
    row.took_s = _seconds(train.get("provenance"))
    status = str(train.get("status"))
    if status != "ok":
        row.status, row.reason = status, _first_line(train.get("reason"))
    elif row.trial is not None:
        row.status = "ok"
    elif evaluation is None:
        row.status = "trained"  # its evaluation is next
    else:
        row.status, row.reason = str(evaluation.get("status")), _first_line(evaluation.get("reason"))
        row.test_score = (evaluation.get("metrics") or {}).get(row.metric)
        took = _seconds(evaluation.get("provenance"))
        if row.took_s is not None and took is not None:
            row.took_s += took


def read_row(folder: Path, row: Row, *, now: float, host: str) -> Row:
    """One run's (or trial's) row from its folder under runs/ (tuning/trials/)."""
    for name in ("eval-progress.json", "progress.json"):
        progress = _read(folder / name)
        try:
            current = progress is not None and _from_progress(row, progress, now=now, host=host)
        except (ProgressError, TypeError, ValueError, KeyError, IndexError) as exc:
            # Not what a job of this version writes: its records (if any) still say where the run is.
            row.note = f"passed over {folder / name}: {exc}"
            row.status, row.progress, row.eta_s, row.took_s, row.elapsed_s = "waiting", "", None, None, None
            continue
        if current:
            if name == "eval-progress.json" and row.took_s is not None:  # the run's length: training too
                trained = _seconds((_read(folder / "train.json") or {}).get("provenance"))
                row.took_s = None if trained is None else row.took_s + trained
            return row
    train = _read(folder / "train.json")
    _from_records(row, train, _read(folder / "eval.json") if row.trial is None and train else None)
    return row


def _seed(name: str) -> int | None:
    return int(name[4:]) if name.startswith("seed") and name[4:].isdigit() else None


def study_rows(results: str | Path, *, now: float | None = None) -> list[Row]:
    """Every planned or started run and trial under `results`: trials first, as the study
    runs them, each strategy's in plan order; then, marked `leftover`, those the plan does
    not list (where there is a plan)."""
    results = Path(results)
    now, host = time.time() if now is None else now, socket.gethostname()
    plan = _read(results / PLAN_FILE) or {}
    keys: dict[tuple[str, str, str, str | None, int], Path] = {}
    for trial in plan.get("trials", []):
        task, model, strategy, name, seed = (trial[k] for k in ("task", "model", "strategy", "trial", "seed"))
        keys[(task, model, strategy, name, int(seed))] = (
            results / "tuning" / task / model / "trials" / strategy / name / f"seed{seed}"
        )
    for run in plan.get("runs", []):
        task, model, strategy, seed = (run[k] for k in ("task", "model", "strategy", "seed"))
        keys[(task, model, strategy, None, int(seed))] = results / "runs" / task / model / strategy / f"seed{seed}"
    planned = set(keys)
    for folder in sorted((results / "tuning").glob("*/*/trials/*/*/seed*")):
        if (seed := _seed(folder.name)) is not None:
            task, model, _, strategy, name = folder.parts[-6:-1]
            keys.setdefault((task, model, strategy, name, seed), folder)
    for folder in sorted((results / "runs").glob("*/*/*/seed*")):
        if (seed := _seed(folder.name)) is not None:
            task, model, strategy = folder.parts[-4:-1]
            keys.setdefault((task, model, strategy, None, seed), folder)
    metrics = plan.get("metrics") or {}
    rows = []
    for key, folder in sorted(keys.items(), key=lambda item: bool(plan) and item[0] not in planned):
        task, model, strategy, trial, seed = key
        row = Row(task=task, model=model, strategy=strategy, seed=seed, trial=trial)
        row.metric = metrics.get(task) or _recorded_metric(folder) or row.metric
        row.leftover = bool(plan) and key not in planned
        rows.append(read_row(folder, row, now=now, host=host))
    return rows


def _recorded_metric(folder: Path) -> str | None:
    """The primary metric a finished run's record names (a plan from before plans named it)."""
    metric = ((_read(folder / "train.json") or {}).get("metrics") or {}).get("best_val_metric")
    return metric if isinstance(metric, str) else None


def _holds_study(folder: Path) -> bool:
    """A study's results folder: its plan, or a run or trial of this version's layout."""
    return (
        (folder / PLAN_FILE).is_file()
        or any((folder / "runs").glob("*/*/*/seed*"))
        or any((folder / "tuning").glob("*/*/trials/*/*/seed*"))
    )


def find_results(folder: str | Path) -> Path:
    """The results folder of the study at `folder`: `folder` itself, the results/ it holds
    (the study's folder), or the results/ it lies in (results/runs, a run's folder);
    StudyNotFound saying what to pass otherwise (nothing there, or a results folder from
    before tasks and models)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StudyNotFound(f"no results folder {folder}: pass the study's results folder (e.g. results)")
    above = [parent for parent in folder.resolve().parents if parent.name == "results"][:1]
    for candidate in (folder, folder / "results", *above):
        if candidate.is_dir() and _holds_study(candidate):
            return candidate
    old = next(iter(folder.glob("runs/*/seed*")), None) or next(iter(folder.glob("results/runs/*/seed*")), None)
    if old is not None:
        raise StudyNotFound(
            f"{folder} holds runs from before studies had tasks and models ({old}: runs/<strategy>/seed<N>, not "
            "runs/<task>/<model>/<strategy>/seed<N>), which ftcompare status does not read: pass the results "
            "folder of a study run with this version, or run this one again with it"
        )
    raise StudyNotFound(
        f"{folder} holds no study (no plan.json, runs/ or tuning/ in it, nor in a results/ folder in it or above "
        "it): pass a study's results folder, or the folder Snakemake ran it in, once the study has started"
    )


# --------------------------------------------------------------------------- the table


def study_eta(rows: Iterable[Row]) -> float | None:
    """Seconds until the study ends, roughly: each waiting job at the median length of the
    finished (else running) ones of its strategy and kind (else of all), each running one
    at its own ETA (one that has none yet, starting or at step 0: at that median less its
    time so far), all shared among as many jobs at a time as run now. None while nothing
    gives a length."""
    rows = list(rows)
    running = [r for r in rows if r.status == "running"]
    waiting = [r for r in rows if r.status == "waiting"]
    if not waiting and not running:
        return 0.0
    took: dict[tuple[str, bool], list[float]] = {}
    for finished in (True, False):  # the finished jobs' lengths where there are any
        for r in rows:
            if r.took_s is not None and r.status != "trained" and (r.status != "running") == finished:
                took.setdefault((r.strategy, r.trial is None), []).append(r.took_s)
        if took:
            break
    every = [t for ts in took.values() for t in ts]

    def typical(r: Row) -> float | None:
        known = took.get((r.strategy, r.trial is None)) or every
        return statistics.median(known) if known else None

    total = 0.0
    for r in running:
        eta = r.eta_s
        if eta is None and (length := typical(r)) is not None:
            eta = max(0.0, length - (r.elapsed_s or 0.0))
        if eta is None:
            return None
        total += eta
    for r in waiting:
        length = typical(r)
        if length is None:
            return None
        total += length
    return total / max(1, len(running))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


# `best val` and `test`: the task's primary metric (the `metric` column), as the report ranks by it.
COLUMNS = (
    "task",
    "model",
    "strategy",
    "trial",
    "seed",
    "status",
    "progress",
    "ETA",
    "metric",
    "best val",
    "test",
    "reason",
)


def render(rows: list[Row], *, now: float | None = None, width: int = 200) -> str:
    """The table (the plan's runs, then any leftovers of an earlier config, apart), a line
    with the counts and the study's ETA (the plan's runs alone), and a line per file passed over."""
    now = time.time() if now is None else now
    current = [r for r in rows if not r.leftover]
    leftovers = [r for r in rows if r.leftover]
    cells = [
        [
            r.task,
            r.model,
            r.strategy,
            r.trial or "",
            str(r.seed),
            r.status,
            r.progress,
            _duration(r.eta_s) if r.status == "running" else "",
            r.metric,
            _number(r.best_val),
            _number(r.test_score),
            r.reason or "",
        ]
        for r in current + leftovers
    ]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(COLUMNS)]
    shown = [i for i, h in enumerate(COLUMNS) if h in ("strategy", "seed", "status") or any(c[i] for c in cells)]
    lines = ["  ".join(COLUMNS[i].ljust(widths[i]) for i in shown).rstrip()]
    lines += ["  ".join(c[i].ljust(widths[i]) for i in shown).rstrip()[:width] for c in cells[: len(current)]]
    if leftovers:
        lines.append(f"-- not in the current config's plan (left from an earlier one; not counted): {len(leftovers)}")
        lines += ["  ".join(c[i].ljust(widths[i]) for i in shown).rstrip()[:width] for c in cells[len(current) :]]
    counts = {status: sum(r.status == status for r in current) for status in STATUSES}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    eta = study_eta(current)
    when = "" if not eta else f" (~{datetime.datetime.fromtimestamp(now + eta).strftime('%H:%M')})"
    lines.append(f"{len(current)} jobs: {summary or 'none found'}; study ETA {_duration(eta)}{when}")
    lines += [f"note: {r.note}" for r in rows if r.note]
    return "\n".join(lines)


def watch_seconds(text: str) -> float:
    """`--watch`'s value: finite seconds, at least MIN_WATCH_S; ValueError saying so otherwise."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < MIN_WATCH_S:
        raise ValueError(f"{text!r}: give a number of seconds, at least {MIN_WATCH_S:g} (e.g. 10)")
    return seconds


def show(folder: str | Path, *, watch: float | None = None) -> int:
    """Print the table of the study at `folder` (find_results) once, or every `watch`
    seconds until interrupted."""
    if watch is not None:
        watch_seconds(str(watch))
    results = find_results(folder)
    while True:
        table = render(study_rows(results))
        if watch is None:
            print(table)
            return 0
        stamp = datetime.datetime.now().strftime("%H:%M:%S")
        # Clear the terminal and redraw: the table stays in one place while it refreshes.
        print(f"\x1b[H\x1b[2J{results}  {stamp}  (every {watch:g} s; Ctrl-C stops)\n{table}", flush=True)
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return 0
