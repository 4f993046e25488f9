"""`ftcompare plan`: what a study will cost, before any job runs. The study's config is
read as Snakemake reads it (the folder's config/config.yaml, then each --configfile over
it, checked as the Snakefile checks it: ftcompare.plan.checks), and each job estimated by
ftcompare.plan.cost. Torch-free: it runs on a login node in a second.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ftcompare.contract import ConfigError
from ftcompare.plan import cost

WORKFLOW_CONFIG = Path("config") / "config.yaml"  # the Snakefile's `configfile:`, in the study's folder
COLUMNS = (
    "task",
    "model",
    "strategy",
    "train_tokens",
    "validation_tokens",
    "test_tokens",
    "trial_jobs",
    "trial_tokens",
    "trial_h",
    "finetune_jobs",
    "finetune_tokens",
    "finetune_h",
    "evaluate_jobs",
    "evaluate_tokens",
    "evaluate_h",
    "total_h",
    "tokens_source",
    "rate_source",
)


def load_study(directory: str | Path, configfiles: Sequence[str | Path] = ()) -> tuple[dict, dict]:
    """The study's config and its cells, as `snakemake --directory D --configfile F...`
    sees them: --configfile paths are read from where the command runs, the Snakefile's
    config/config.yaml from D (where Snakemake works); D becomes the working folder, as
    Snakemake makes it, so that the config's relative paths read the same files."""
    from ftcompare.plan.checks import checked_study
    from ftcompare.plan.config import load_yaml
    from ftcompare.plan.matrix import layer

    overlays = [Path(path).resolve() for path in configfiles]
    if not Path(directory).is_dir():
        raise ConfigError(f"--directory {str(directory)!r} is not a folder")
    os.chdir(directory)
    if WORKFLOW_CONFIG.is_file():
        config = load_yaml(WORKFLOW_CONFIG)
    elif overlays:
        config = {}
    else:
        raise ConfigError(f"{WORKFLOW_CONFIG} is missing in {str(directory)!r} and no --configfile was given")
    for overlay in overlays:
        config = layer(config, load_yaml(overlay))
    return checked_study(config, sources=False)


def plan_rows(costs: cost.StudyCosts) -> list[dict[str, Any]]:
    """The plan's lines (COLUMNS), hours rather than seconds."""
    rows = []
    for row in costs.rows():
        cell = next(c for c in costs.cells if (c.task, c.model) == (row["task"], row["model"]))
        tokens = costs.tokens(cell)
        hours = {kind: None if row[f"{kind}_s"] is None else row[f"{kind}_s"] / 3600 for kind in cost.KINDS}
        sources = sorted({row[key] for key in ("trial_rate_source", "finetune_rate_source") if row.get(key)})
        rows.append(
            {
                **{key: row[key] for key in ("task", "model", "strategy")},
                "train_tokens": None if tokens is None else tokens.train,
                "validation_tokens": None if tokens is None else tokens.validation,
                "test_tokens": None if tokens is None else tokens.test,
                **{f"{kind}_jobs": row[f"{kind}_jobs"] for kind in cost.KINDS},
                **{f"{kind}_tokens": row[f"{kind}_tokens"] for kind in cost.KINDS},
                **{f"{kind}_h": hours[kind] for kind in cost.KINDS},
                "total_h": None if None in hours.values() else sum(hours.values()),
                "tokens_source": row["tokens_source"],
                "rate_source": "; ".join(sources),
            }
        )
    return rows


def totals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The study's jobs and hours, and the tuning trials' share of the hours."""
    known = [r for r in rows if r["total_h"] is not None]
    total = sum(r["total_h"] for r in known)
    trials = sum(r["trial_h"] for r in known)
    return {
        "jobs": sum(r[f"{kind}_jobs"] for r in rows for kind in cost.KINDS),
        "trial_jobs": sum(r["trial_jobs"] for r in rows),
        "hours": total,
        "trial_hours": trials,
        "tuning_share": trials / total if total else 0.0,
        # Of the hours, each job's start-up allowance (throughput.yaml's job_startup_s).
        "startup_hours": sum(r[f"{kind}_jobs"] for r in known for kind in cost.KINDS) * cost.startup_seconds() / 3600,
        "unknown": len(rows) - len(known),
    }


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "?"
    return f"{value:,.0f}" if digits == 0 else f"{value:,.{digits}f}"


def render(rows: Sequence[dict[str, Any]], *, device: str, as_csv: bool = False) -> str:
    """The plan as a table (or CSV), ending with the study's totals."""
    if as_csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue()
    header = ("task", "model", "strategy", "trials", "trial h", "runs", "run h", "evals", "eval h", "tokens/pass")
    lines = [header]
    for r in rows:
        passes = (
            "?"
            if r["train_tokens"] is None
            else "/".join(_num(r[k], 0) for k in ("train_tokens", "validation_tokens", "test_tokens"))
        )
        lines.append(
            (
                r["task"],
                r["model"],
                r["strategy"],
                str(r["trial_jobs"]),
                _num(r["trial_h"], 3),
                str(r["finetune_jobs"]),
                _num(r["finetune_h"], 3),
                str(r["evaluate_jobs"]),
                _num(r["evaluate_h"], 3),
                passes,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    text.append("")
    text.append("tokens/pass: train/validation/test, one pass; a run trains `epochs` passes and validates after each.")
    text.append("Sources (tokens; throughput):")
    for source in sorted({r["tokens_source"] for r in rows}):
        cells = sorted({f"{r['task']}/{r['model']}" for r in rows if r["tokens_source"] == source})
        text.append(f"  tokens  {source}: {', '.join(cells[:6])}{' ...' if len(cells) > 6 else ''}")
    for source in sorted({part for r in rows for part in r["rate_source"].split("; ") if part}):
        count = sum(source in r["rate_source"].split("; ") for r in rows)
        text.append(f"  rate    {source} ({count} lines)")
    t = totals(rows)
    text.append("")
    text.append(
        f"study on {device}: {t['jobs']:,} GPU jobs ({t['trial_jobs']:,} tuning trials), "
        f"{t['hours']:,.2f} GPU-hours ({t['startup_hours']:,.2f} of them the jobs' start-up, "
        f"{cost.startup_seconds():.0f} s each), tuning {t['tuning_share']:.0%} of them ({t['trial_hours']:,.2f} h)"
        + (f"; {t['unknown']} lines of unknown size not counted" if t["unknown"] else "")
    )
    return "\n".join(text) + "\n"


def plan(
    directory: str | Path = ".",
    configfiles: Sequence[str | Path] = (),
    *,
    device: str | None = None,
    calibration: str | Path | None = None,
    as_csv: bool = False,
) -> str:
    """`ftcompare plan`'s output for the study in `directory`."""
    configfiles = [Path(p).resolve() for p in configfiles]
    calibration = None if calibration is None else Path(calibration).resolve()
    resolved, cells = load_study(directory, configfiles)
    throughput = cost.Throughput.of_study("results", calibration=calibration)
    costs = cost.StudyCosts(
        cells, seeds=resolved["seeds"], settings=resolved["cost"], throughput=throughput, device=device
    )
    return render(plan_rows(costs), device=costs.device, as_csv=as_csv)
