"""Smoke test of bench/throughput.py: a tiny --quick run, its final lines and its JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench" / "throughput.py"


def test_quick_bench_prints_study_lines_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for name in ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF"):
        env.pop(name, None)
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--quick",
            "--strategies",
            "full",
            "lora",
            "--train-steps",
            "1",
            "--ref-steps",
            "1",
            "--eval-batches",
            "1",
            "--ref-eval-batches",
            "1",
            "--reviews",
            "400",
            "--json",
            str(out),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    first = re.fullmatch(r"study_projected_s: (\d+(?:\.\d+)?)", lines[-2])
    second = re.fullmatch(r"study_speedup_vs_reference: (\d+(?:\.\d+)?)", lines[-1])
    assert first and second, lines[-2:]
    assert float(first.group(1)) > 0 and float(second.group(1)) > 0

    payload = json.loads(out.read_text())
    assert set(payload["strategies"]) == {"full", "lora"}
    for strategy in ("full", "lora"):
        entry = payload["strategies"][strategy]
        for recipe in ("reference", "workflow"):
            numbers = entry[recipe]
            assert numbers["recipe"] == recipe
            assert numbers["tokens_per_s"] > 0 and numbers["projected_train_s"] > 0 and numbers["projected_eval_s"] > 0
        assert entry["reference"]["batch_size"] == 16 and entry["reference"]["optimizer"] == "AdamW foreach=False"
        assert entry["reference"]["max_tokens"] is None and entry["reference"]["reviews_per_step"] == 16
        # The config's budget (8192 at 512 tokens), scaled with --quick's 128-token lengths.
        assert entry["workflow"]["max_tokens"] == 2048
        assert 16 <= entry["workflow"]["reviews_per_step"] < entry["workflow"]["batch_size"] == 64
    assert payload["versions"]["cuda_allocator"] == "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
    assert payload["study_projected_s"] == sum(
        payload["strategies"][s]["workflow"]["projected_s"] for s in ("full", "lora")
    )
    assert abs(payload["study_projected_s"] - float(first.group(1))) < 0.1


def test_bench_imports_neither_datasets_nor_snakemake() -> None:
    # The GPU image has neither: the bench must only need torch, transformers and peft.
    code = (
        "import sys; sys.path.insert(0, 'bench'); import throughput; "
        "bad = [m for m in ('datasets', 'snakemake') if m in sys.modules]; assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
