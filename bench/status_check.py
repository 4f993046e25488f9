"""How long does `ftcompare status` take on a large study? Prints the seconds.

    python bench/status_check.py [--runs 1000] [--repeat 3]

Fabricates, in a temporary folder, a study of `--runs` final runs (a tenth finished with
train and eval records, a tenth failed, the rest running with a progress file, all on a
host that is not this one, so that their files' age decides) plus its plan, then times
reading it and drawing the table as `ftcompare status` does (the best of `--repeat`;
the issue's bound: under 2 s for a thousand runs, read from a cold process). It imports
neither torch nor pandas.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from ftcompare.use import render, study_rows  # noqa: E402


def fabricate(results: Path, runs: int) -> None:
    now = time.time()
    strategies = [f"s{i:02d}" for i in range(max(1, runs // 10))]
    seeds = range(10)
    cell = {"task": "imdb", "model": "roberta-base"}
    plan = {"runs": [], "trials": []}
    curve = [{"step": 20 * i, "epoch": i / 40, "loss": 0.5, "lr": 1e-5} for i in range(1, 121)]
    for n, (strategy, seed) in enumerate((s, seed) for s in strategies for seed in seeds):
        plan["runs"].append({**cell, "strategy": strategy, "seed": seed})
        folder = results / "runs" / cell["task"] / cell["model"] / strategy / f"seed{seed}"
        folder.mkdir(parents=True)
        provenance = {"started_at": "2027-01-15T08:00:00+00:00", "finished_at": "2027-01-15T08:20:00+00:00"}
        if n % 10 == 0:
            metrics = {"best_val_accuracy": 0.9, "optimizer_steps": 2400}
            train = {"status": "ok", "metrics": metrics, "loss_curve": curve, "provenance": provenance}
            (folder / "train.json").write_text(json.dumps(train))
            (folder / "eval.json").write_text(json.dumps({"status": "ok", "metrics": {"accuracy": 0.91}}))
        elif n % 10 == 1:
            failed = {"status": "failed", "reason": "OutOfMemoryError: CUDA out of memory", "provenance": provenance}
            (folder / "train.json").write_text(json.dumps(failed))
        else:
            progress = {
                "state": "running",
                "phase": "training",
                "pid": 1,
                "host": "gpu-node",
                "heartbeat_s": 30.0,
                "started_at": now - 600,
                "updated_at": now - 10,
                "step": 800,
                "total_steps": 2400,
                "eta_s": 1200.0,
                "best_val_accuracy": 0.88,
            }
            (folder / "progress.json").write_text(json.dumps(progress))
    (results / "plan.json").write_text(json.dumps(plan))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        results = Path(folder) / "results"
        fabricate(results, args.runs)
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            table = render(study_rows(results))
            times.append(time.perf_counter() - started)
    print(table.splitlines()[-1])
    print(f"ftcompare status on {args.runs} runs: {min(times):.3f} s (best of {args.repeat}; bound 2 s)")
    print(f"torch imported: {'torch' in sys.modules}, pandas imported: {'pandas' in sys.modules}")


if __name__ == "__main__":
    main()
