"""`ftcompare status`: the table a user reads while a study runs, from the files its jobs
write, without torch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from ftcompare.plan import write_plan
from ftcompare.use import cli, render, study_rows

REPO_ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0
HOST = socket.gethostname()


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def progress(**values) -> dict:
    return {
        "format": 1,
        "kind": "train",
        "state": "running",
        "phase": "training",
        "pid": os.getpid(),
        "host": HOST,
        "heartbeat_s": 30.0,
        "started_at": NOW - 600,
        "updated_at": NOW - 5,
        "step": 40,
        "total_steps": 100,
        "eta_s": 900.0,
        "best_val_accuracy": 0.81,
        **values,
    }


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def record(status: str, *, reason: str | None = None, **metrics) -> dict:
    return {
        "status": status,
        "reason": reason,
        "metrics": metrics,
        "provenance": {"started_at": "2027-01-15T08:00:00+00:00", "finished_at": "2027-01-15T08:20:00+00:00"},
    }


def study(results: Path) -> None:
    """A study of five strategies x two seeds and two lora trials, in every state."""
    cell = {"task": "imdb", "model": "roberta-base"}
    plan = {
        "runs": [
            {**cell, "strategy": s, "seed": seed} for s in ("full", "lora", "qlora", "ia3", "bitfit") for seed in (0, 1)
        ],
        "trials": [
            {**cell, "strategy": "lora", "trial": f"learning_rate={lr}", "seed": 0} for lr in ("0.0005", "0.001")
        ],
    }
    write(results / "plan.json", plan)
    trials = results / "tuning" / "imdb" / "roberta-base" / "trials" / "lora"
    write(trials / "learning_rate=0.0005" / "seed0" / "train.json", record("ok", best_val_accuracy=0.84))
    write(trials / "learning_rate=0.001" / "seed0" / "train.json", record("ok", best_val_accuracy=0.86))
    runs = results / "runs" / "imdb" / "roberta-base"
    write(runs / "full/seed0/train.json", record("ok", best_val_accuracy=0.9, optimizer_steps=100))
    write(runs / "full/seed0/eval.json", record("ok", accuracy=0.912))
    write(runs / "full/seed1/progress.json", progress())  # this process: alive
    write(runs / "lora/seed0/train.json", record("ok", best_val_accuracy=0.88, optimizer_steps=100))
    write(runs / "lora/seed0/eval-progress.json", progress(kind="eval", phase="testing", batches=[12, 50]))
    reason = "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\nTraceback ..."
    write(runs / "qlora/seed0/train.json", record("failed", reason=reason))
    write(runs / "qlora/seed1/train.json", record("skipped", reason="bitsandbytes cannot be imported"))
    write(runs / "ia3/seed0/progress.json", progress(pid=dead_pid()))  # same host, no process
    write(runs / "ia3/seed1/progress.json", progress(host="gpu-node-7", updated_at=NOW - 3600))  # stale elsewhere
    write(runs / "bitfit/seed0/progress.json", progress(host="gpu-node-7", updated_at=NOW - 20))  # fresh elsewhere
    old = progress(state="stopped", reason="Preempted: preempted at step 12")
    write(runs / "bitfit/seed1/progress.json", old)


def test_one_table_of_every_run_and_trial_in_every_state(tmp_path):
    study(tmp_path)
    rows = {(r.strategy, r.trial, r.seed): r for r in study_rows(tmp_path, now=NOW)}
    status = {key: r.status for key, r in rows.items()}
    assert status == {
        ("lora", "learning_rate=0.0005", 0): "ok",
        ("lora", "learning_rate=0.001", 0): "ok",
        ("full", None, 0): "ok",
        ("full", None, 1): "running",
        ("lora", None, 0): "running",
        ("lora", None, 1): "waiting",
        ("qlora", None, 0): "failed",
        ("qlora", None, 1): "skipped",
        ("ia3", None, 0): "died",
        ("ia3", None, 1): "died",
        ("bitfit", None, 0): "running",
        ("bitfit", None, 1): "died",
    }
    assert rows[("qlora", None, 0)].reason == "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert rows[("full", None, 0)].test_score == 0.912 and rows[("full", None, 0)].progress == "100/100"
    assert rows[("full", None, 1)].progress == "40/100" and rows[("full", None, 1)].eta_s == 895.0
    assert rows[("lora", None, 0)].progress == "test 12/50"
    assert rows[("bitfit", None, 1)].reason == "Preempted: preempted at step 12"
    assert "gpu-node-7" in rows[("ia3", None, 1)].reason
    table = render(list(rows.values()), now=NOW)
    lines = table.splitlines()
    assert lines[0].split() == ["task", "model", "strategy", "trial", "seed", "status", "progress", "ETA"] + [
        "metric",
        "best",
        "val",
        "test",
        "reason",
    ]
    assert len(lines) == 1 + 12 + 1
    assert lines[-1].startswith("12 jobs: 3 running, 3 ok, 1 failed, 1 skipped, 3 died, 1 waiting; study ETA ")
    assert "study ETA ?" not in lines[-1]  # lora/seed1 waits as long as the finished lora run took


def test_the_plan_lists_what_the_config_will_run(tmp_path):
    from ftcompare.plan import checked_study, load_config

    config = load_config()
    config["models"] = {
        "roberta-base": None,
        "bert": {"name_or_path": "bert-base-uncased", "skip_strategies": ["qlora"]},
    }
    _, cells = checked_study(config)
    write_plan(cells, tmp_path / "plan.json")
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["runs"][0] == {"task": "imdb", "model": "roberta-base", "strategy": "full", "seed": 0}
    assert len(plan["runs"]) == (4 + 3) * 3 and len(plan["trials"]) == (4 + 3) * 5
    rows = study_rows(tmp_path)
    assert {r.status for r in rows} == {"waiting"} and len(rows) == 56
    assert {(r.task, r.model) for r in rows} == {("imdb", "roberta-base"), ("imdb", "bert")}


def test_status_runs_without_torch_and_watch_refreshes(tmp_path):
    study(tmp_path)
    probe = (
        "import sys; from ftcompare.use import cli; code = cli.main(['status', sys.argv[1]]); "
        "print('torch' in sys.modules, 'pandas' in sys.modules); sys.exit(code)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "False False"
    assert "12 jobs:" in out.stdout
    watched = subprocess.Popen(
        [sys.executable, "-m", "ftcompare", "status", str(tmp_path), "--watch", "1"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(3)
    watched.terminate()
    assert watched.stdout.read().count("12 jobs:") >= 2


def test_a_missing_results_folder_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["status", str(tmp_path / "nowhere")]) == 2
    assert "no results folder" in capsys.readouterr().err


def test_status_finds_the_study_from_its_folder_or_says_what_to_pass(tmp_path, capsys):
    study(tmp_path / "results")
    for given in (tmp_path, tmp_path / "results", tmp_path / "results" / "runs"):
        assert cli.main(["status", str(given)]) == 0
        assert "12 jobs:" in capsys.readouterr().out
    old = tmp_path / "old" / "results"  # runs/<strategy>/seed<N>: before tasks and models
    write(old / "runs" / "full" / "seed0" / "train.json", record("ok", best_val_accuracy=0.9))
    (tmp_path / "empty").mkdir()
    for given, says in ((old, "from before studies had tasks and models"), (tmp_path / "empty", "holds no study")):
        assert cli.main(["status", str(given)]) == 2
        captured = capsys.readouterr()
        assert says in captured.err and "pass" in captured.err and captured.out == ""


def test_status_shows_the_primary_metric_and_sets_leftovers_apart(tmp_path):
    cell = {"task": "rte", "model": "minilm"}
    write(tmp_path / "plan.json", {"runs": [{**cell, "strategy": "full", "seed": 0}], "metrics": {"rte": "macro_f1"}})
    runs = tmp_path / "runs"
    train = record("ok", best_val_accuracy=0.9, best_val_metric="macro_f1", best_val_score=0.6, optimizer_steps=9)
    write(runs / "rte/minilm/full/seed0/train.json", train)
    write(runs / "rte/minilm/full/seed0/eval.json", record("ok", accuracy=0.91, macro_f1=0.55))
    write(runs / "gone/minilm/full/seed0/train.json", record("ok", best_val_accuracy=0.5, optimizer_steps=9))
    write(runs / "gone/minilm/full/seed0/eval.json", record("ok", accuracy=0.5))
    rows = study_rows(tmp_path, now=NOW)
    assert [(r.task, r.metric, r.best_val, r.test_score, r.leftover) for r in rows] == [
        ("rte", "macro_f1", 0.6, 0.55, False),
        ("gone", "accuracy", 0.5, 0.5, True),
    ]
    lines = render(rows, now=NOW).splitlines()
    assert "macro_f1" in lines[1] and "0.5500" in lines[1] and "0.91" not in lines[1]
    assert lines[2].startswith("-- not in the current config's plan") and lines[3].startswith("gone")
    assert lines[-1] == "1 jobs: 1 ok; study ETA 0:00:00"


def test_a_run_waiting_for_its_evaluation_is_trained_not_waiting(tmp_path):
    write(tmp_path / "plan.json", {"runs": [{"task": "t", "model": "m", "strategy": "full", "seed": 0}]})
    write(tmp_path / "runs/t/m/full/seed0/train.json", record("ok", best_val_accuracy=0.8, optimizer_steps=9))
    (row,) = study_rows(tmp_path, now=NOW)
    assert row.status == "trained" and render([row], now=NOW).splitlines()[-1].startswith("1 jobs: 1 trained;")


def test_the_study_eta_counts_jobs_at_step_0_or_starting(tmp_path):
    study(tmp_path)
    runs = tmp_path / "runs" / "imdb" / "roberta-base"
    write(runs / "full/seed1/progress.json", progress(step=0, eta_s=None))
    write(runs / "bitfit/seed0/progress.json", progress(phase="starting", step=None, total_steps=None, eta_s=None))
    rows = study_rows(tmp_path, now=NOW)
    assert render(rows, now=NOW).splitlines()[-1].split("study ETA ")[1] != "?"


def test_a_clock_ahead_on_the_jobs_host_does_not_inflate_the_eta(tmp_path):
    write(tmp_path / "runs/t/m/full/seed0/progress.json", progress(updated_at=NOW + 3600, started_at=NOW, eta_s=60.0))
    (row,) = study_rows(tmp_path, now=NOW)
    assert row.status == "running" and row.eta_s == 60.0 and row.took_s == 60.0


def test_a_malformed_progress_file_is_passed_over_with_a_note(tmp_path):
    folder = tmp_path / "runs/t/m/full/seed0"
    write(folder / "progress.json", progress(updated_at="yesterday", heartbeat_s="x"))
    write(tmp_path / "runs/t/m/lora/seed0/progress.json", progress(step="a", best_val_accuracy=[1]))
    rows = study_rows(tmp_path, now=NOW)
    assert [r.status for r in rows] == ["waiting", "waiting"]
    lines = render(rows, now=NOW).splitlines()
    assert lines[-2] == f"note: passed over {folder / 'progress.json'}: heartbeat_s = 'x' is not a number"
    assert lines[-1].startswith("note: ") and "best_val_accuracy = [1] is not a number" in lines[-1]


def test_watch_takes_finite_seconds_from_one(tmp_path, capsys):
    study(tmp_path)
    for value in ("-1", "0", "0.01", "nan", "inf", "soon"):
        try:
            cli.main(["status", str(tmp_path), f"--watch={value}"])
        except SystemExit as exc:  # argparse: usage and the error, status 2
            assert exc.code == 2
        else:
            raise AssertionError(f"--watch {value} was accepted")
        assert f"argument --watch: {value!r}" in capsys.readouterr().err
