"""`ftcompare status`: one table of every run and trial of a study, from what its jobs write.

It reads, under the results folder, the study's plan (plan.json, written when Snakemake
starts the study: every planned run and trial, so that those not started show as
waiting), each job's progress file (ftcompare.progress) and the finished records
(train.json, eval.json). Nothing else: it works on a login node while SLURM runs the jobs
elsewhere, imports neither torch nor pandas, and reads a thousand runs in well under 2 s
(bench/status_check.py).

A progress file that says `running` is believed only while its job lives: on the host
that wrote it, while its process exists; from another host, while the file is younger
than STALE_HEARTBEATS heartbeats (the job refreshes it every heartbeat, ftcompare.progress).
Otherwise the run shows as `died`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import statistics
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PLAN = "plan.json"
# A job refreshes its progress file every heartbeat; past this many, it is gone. Generous:
# a shared file system may show a file late, and clocks differ between hosts.
STALE_HEARTBEATS = 4
STATUSES = ("running", "ok", "failed", "skipped", "died", "waiting")


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
    best_val: float | None = None
    test_accuracy: float | None = None
    reason: str | None = None
    # Wall seconds a finished job took (started_at to finished_at), or a running one's
    # elapsed time plus its ETA: the study's ETA counts waiting jobs at such lengths.
    took_s: float | None = None


# --------------------------------------------------------------------------- the plan


def write_plan(cells: Mapping[Any, Mapping[str, Any]], path: str | Path) -> None:
    """The study's runs and trials, cell by cell (each cell's checked config, keyed by its
    ftcompare.study.Cell), for `ftcompare status` to list the ones not yet started;
    rewritten only when it changes."""
    from ftcompare.files import atomic_write_bytes
    from ftcompare.tuning import trials

    plan: dict[str, Any] = {"runs": [], "trials": []}
    for cell, config in cells.items():
        where = {"task": cell.task, "model": cell.model}
        plan["runs"] += [
            {**where, "strategy": s, "seed": seed} for s in config["strategies"] for seed in config["seeds"]
        ]
        plan["trials"] += [
            {**where, "strategy": trial.strategy, "trial": trial.id, "seed": seed}
            for strategy_trials in trials(config).values()
            for trial in strategy_trials
            for seed in config["tuning"]["seeds"]
        ]
    data = json.dumps(plan, indent=1).encode()
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


# --------------------------------------------------------------------------- reading


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as handle:
            found = json.load(handle)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _alive(progress: Mapping[str, Any], now: float, host: str) -> bool:
    """Whether the job that writes `progress` still runs (see the module's docstring)."""
    heartbeat = float(progress.get("heartbeat_s") or 30.0)
    fresh = now - float(progress.get("updated_at") or 0) <= STALE_HEARTBEATS * heartbeat
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
            age = now - float(progress.get("updated_at") or 0)
            row.status, row.reason = "died", f"no sign of its job for {_duration(age)} ({progress.get('host')})"
        else:
            row.status = "running"
            if progress.get("eta_s") is not None:
                row.eta_s = max(0.0, float(progress["eta_s"]) - (now - float(progress.get("updated_at") or now)))
                row.took_s = now - float(progress.get("started_at") or now) + row.eta_s
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
    if progress.get("best_val_accuracy") is not None:
        row.best_val = progress["best_val_accuracy"]
    return True


def _from_records(row: Row, train: Mapping[str, Any] | None, evaluation: Mapping[str, Any] | None) -> None:
    if train is None:
        return
    metrics = train.get("metrics") or {}
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
        row.status, row.progress = "waiting", "trained"  # its evaluation is next
    else:
        row.status, row.reason = str(evaluation.get("status")), _first_line(evaluation.get("reason"))
        row.test_accuracy = (evaluation.get("metrics") or {}).get("accuracy")
        took = _seconds(evaluation.get("provenance"))
        if row.took_s is not None and took is not None:
            row.took_s += took


def read_row(folder: Path, row: Row, *, now: float, host: str) -> Row:
    """One run's (or trial's) row from its folder under runs/ (tuning/trials/)."""
    for name in ("eval-progress.json", "progress.json"):
        progress = _read(folder / name)
        if progress is not None and _from_progress(row, progress, now=now, host=host):
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
    runs them, each strategy's in plan order."""
    results = Path(results)
    now, host = time.time() if now is None else now, socket.gethostname()
    plan = _read(results / PLAN) or {}
    keys: dict[tuple[str, str, str, str | None, int], Path] = {}
    for trial in plan.get("trials", []):
        task, model, strategy, name, seed = (trial[k] for k in ("task", "model", "strategy", "trial", "seed"))
        keys[(task, model, strategy, name, int(seed))] = (
            results / "tuning" / task / model / "trials" / strategy / name / f"seed{seed}"
        )
    for folder in sorted((results / "tuning").glob("*/*/trials/*/*/seed*")):
        if (seed := _seed(folder.name)) is not None:
            task, model, _, strategy, name = folder.parts[-6:-1]
            keys.setdefault((task, model, strategy, name, seed), folder)
    for run in plan.get("runs", []):
        task, model, strategy, seed = (run[k] for k in ("task", "model", "strategy", "seed"))
        keys[(task, model, strategy, None, int(seed))] = results / "runs" / task / model / strategy / f"seed{seed}"
    for folder in sorted((results / "runs").glob("*/*/*/seed*")):
        if (seed := _seed(folder.name)) is not None:
            task, model, strategy = folder.parts[-4:-1]
            keys.setdefault((task, model, strategy, None, seed), folder)
    rows = []
    for (task, model, strategy, trial, seed), folder in keys.items():
        row = Row(task=task, model=model, strategy=strategy, seed=seed, trial=trial)
        rows.append(read_row(folder, row, now=now, host=host))
    return rows


# --------------------------------------------------------------------------- the table


def study_eta(rows: Iterable[Row]) -> float | None:
    """Seconds until the study ends, roughly: each waiting job at the median length of the
    finished (else running) ones of its strategy and kind (else of all), the running ones'
    own ETAs, all shared among as many jobs at a time as run now."""
    rows = list(rows)
    running = [r for r in rows if r.status == "running"]
    waiting = [r for r in rows if r.status == "waiting"]
    if not waiting and not running:
        return 0.0
    took: dict[tuple[str, bool], list[float]] = {}
    for finished in (True, False):  # the finished jobs' lengths where there are any
        for r in rows:
            if r.took_s is not None and (r.status != "running") == finished:
                took.setdefault((r.strategy, r.trial is None), []).append(r.took_s)
        if took:
            break
    every = [t for ts in took.values() for t in ts]
    total = 0.0
    for r in waiting:
        known = took.get((r.strategy, r.trial is None)) or every
        if not known:
            return None
        total += statistics.median(known) if r.progress != "trained" else 0.0
    if any(r.eta_s is None for r in running):
        return None
    total += sum(r.eta_s for r in running)
    return total / max(1, len(running))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


COLUMNS = ("task", "model", "strategy", "trial", "seed", "status", "progress", "ETA", "best val", "test acc", "reason")


def render(rows: list[Row], *, now: float | None = None, width: int = 200) -> str:
    """The table, and a last line with the counts and the study's ETA."""
    now = time.time() if now is None else now
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
            _number(r.best_val),
            _number(r.test_accuracy),
            r.reason or "",
        ]
        for r in rows
    ]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(COLUMNS)]
    shown = [i for i, h in enumerate(COLUMNS) if h in ("strategy", "seed", "status") or any(c[i] for c in cells)]
    lines = ["  ".join(COLUMNS[i].ljust(widths[i]) for i in shown).rstrip()]
    lines += ["  ".join(c[i].ljust(widths[i]) for i in shown).rstrip()[:width] for c in cells]
    counts = {status: sum(r.status == status for r in rows) for status in STATUSES}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    eta = study_eta(rows)
    when = "" if not eta else f" (~{datetime.datetime.fromtimestamp(now + eta).strftime('%H:%M')})"
    lines.append(f"{len(rows)} jobs: {summary or 'none found'}; study ETA {_duration(eta)}{when}")
    return "\n".join(lines)


def show(results: str | Path, *, watch: float | None = None) -> int:
    """Print the table once, or every `watch` seconds until interrupted."""
    results = Path(results)
    if not results.is_dir():
        raise FileNotFoundError(f"no results folder {results}: pass the study's results folder (e.g. results)")
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
