"""How close are `ftcompare plan`'s estimates to the times the runs take? Prints each
fine-tune's estimated and measured training time and the median absolute error.

    python bench/plan_accuracy.py [--study .test] [--cores 2] [--keep FOLDER]

The study (default: the .test study) is copied to a fresh folder, calibrated on this device
(`ftcompare calibrate`), estimated from that calibration alone (ftcompare.plan.cost: the
tokenized caches' counts once tokenized, so the prepare and tokenize jobs run first), then
run with Snakemake. Compared: each fine-tune's estimated training seconds (its epochs over
the training split at the calibrated tokens/s, and each step's fixed cost) against train.json's train_time_s (the
steps alone, as the calibration times them), and the whole job's estimate (with the
validation passes and the stated start-up allowance) against Snakemake's benchmark wall
seconds. The issue's bound: median absolute error of training time at most 30%.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ftcompare.plan import cost  # noqa: E402
from ftcompare.plan import estimate as planning  # noqa: E402


def snakemake(folder: Path, *targets: str, cores: int) -> None:
    command = [sys.executable, "-m", "snakemake", *targets, "--snakefile", str(REPO / "Snakefile")]
    command += ["--directory", str(folder), "--cores", str(cores), "--resources", "gpu=1", "--workflow-profile", "none"]
    subprocess.run(command, check=True, capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(REPO / ".test"))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="calibration steps per model x family")
    parser.add_argument("--keep", help="run in this folder (kept) instead of a temporary one")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="plan-accuracy-")).resolve()
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(args.study, folder, ignore=shutil.ignore_patterns("results", ".snakemake"))
    load = os.getloadavg()
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ftcompare", "calibrate", "--directory", str(folder), "--steps", str(args.steps)],
        check=True,
        capture_output=True,
        text=True,
    )
    tokenized = [f"results/tokenized/{key}" for key in _tokenized_keys(folder)]
    snakemake(folder, *tokenized, cores=args.cores)
    here = Path.cwd()
    resolved, cells = planning.load_study(folder)
    throughput = cost.Throughput(calibrated=cost.read_calibration(Path("results") / cost.CALIBRATION_FILE))
    costs = cost.StudyCosts(cells, seeds=resolved["seeds"], settings=resolved["cost"], throughput=throughput)
    estimates = {}
    for cell, cfg in cells.items():
        tokens = costs.tokens(cell)
        for strategy in cfg["strategies"]:
            spec = costs.spec(cell, strategy)
            train_rate, _ = costs.rates(spec)
            job = costs.estimate("finetune", cell, strategy)
            estimates[(cell, strategy)] = (cost.training_seconds(tokens, spec=spec, train=train_rate), job.seconds)
    os.chdir(here)
    snakemake(folder, cores=args.cores)
    lines, errors, job_errors = [], [], []
    for (cell, strategy), (train_s, job_s) in estimates.items():
        for seed in resolved["seeds"]:
            record = json.loads((folder / f"results/runs/{cell.path}/{strategy}/seed{seed}/train.json").read_text())
            measured = record["metrics"]["train_time_s"]
            bench = folder / f"results/benchmarks/finetune/{cell.path}/{strategy}_seed{seed}.tsv"
            wall = float(bench.read_text().splitlines()[1].split("\t")[0])
            errors.append(abs(train_s - measured) / measured)
            job_errors.append(abs(job_s - wall) / wall)
            lines.append(
                f"| {cell.path} | {strategy} | {seed} | {train_s:.1f} | {measured:.1f} | {errors[-1]:.0%} "
                f"| {job_s:.0f} | {wall:.0f} |"
            )
    print(
        f"device: {cost.read_calibration(folder / 'results' / cost.CALIBRATION_FILE)[0].device}; "
        f"load average before: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} on {os.cpu_count()} cores; "
        f"{time.perf_counter() - started:.0f} s in all; folder {folder}"
    )
    print("| cell | strategy | seed | est. train s | measured train_time_s | error | est. job s | job wall s |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    print(
        f"median absolute error, training time: {statistics.median(errors):.0%} (bound 30%); "
        f"whole job (start-up allowance {cost.startup_seconds():.0f} s): {statistics.median(job_errors):.0%}"
    )


def _tokenized_keys(folder: Path) -> list[str]:
    from ftcompare.plan import cell_cache_keys

    here = Path.cwd()
    _, cells = planning.load_study(folder)
    os.chdir(here)
    return sorted({cell_cache_keys(cfg)[1] for cfg in cells.values()})


if __name__ == "__main__":
    main()
