"""How long does Snakemake take to plan the largest study the configs describe? Prints the
seconds and the jobs.

    python bench/plan_check.py [--grid-values 3] [--seeds 0 1 2] [--repeat 1]

The study: GLUE's seven tasks (config/glue.yaml) × the four encoders (config/encoders.yaml)
× every named method (config/methods.yaml) × 3 seeds, each strategy tuned over a grid of
`--grid-values` learning rates around its own: thousands of jobs. A dry run
(`snakemake -n`) in an empty folder, so nothing is fetched or trained: what a user waits
for before anything starts, on every rerun too. The issue's bound: under 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from ftcompare.plan import load_config  # noqa: E402

OVERLAYS = ["config/glue.yaml", "config/encoders.yaml", "config/methods.yaml"]


def grid_overlay(folder: Path, *, values: int, seeds: list[int]) -> Path:
    """Every strategy tuned over `values` rates, a factor of 2 apart around its own."""
    config = load_config(*(REPO / path for path in OVERLAYS))
    training_rate = config["training"]["learning_rate"]
    grid = {}
    for name, entry in config["strategies"].items():
        rate = (entry or {}).get("learning_rate", training_rate)
        grid[name] = {"learning_rate": [rate * 2.0 ** (k - values // 2) for k in range(values)]}
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump({"seeds": seeds, "tuning": {"enabled": True, "seeds": [0], "grid": grid}}))
    return path


def dry_run(folder: Path, overlay: Path) -> tuple[float, float, dict[str, int]]:
    """Wall and CPU seconds of `snakemake -n` on the study, and its jobs per rule. The CPU
    time is what the wall time is on an idle machine (Snakemake plans on one core)."""
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--quiet",
        "rules",
        "--cores",
        "1",
        "--resources",
        "gpu=1",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(folder),
        "--workflow-profile",
        "none",
        "--configfile",
        str(REPO / "config" / "config.yaml"),
        *(str(REPO / path) for path in OVERLAYS),
        str(overlay),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(f"the dry run failed:\n{output[-3000:]}")
    table = output.split("Job stats:")[1] if "Job stats:" in output else ""
    jobs = {rule: int(count) for rule, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)}
    return seconds, cpu, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid-values", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        overlay = grid_overlay(folder, values=args.grid_values, seeds=args.seeds)
        runs = [dry_run(folder, overlay) for _ in range(args.repeat)]
    wall, cpu, jobs = min(runs)
    print(f"planned {jobs.get('total', 0)} jobs: " + ", ".join(f"{k} {v}" for k, v in jobs.items() if k != "total"))
    print(f"dry run: {wall:.1f} s wall, {cpu:.1f} s CPU (best of {len(runs)}; bound: 30 s on 2 cores)")


if __name__ == "__main__":
    main()
