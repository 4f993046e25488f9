"""A run's settings for the tests: the study's config, sized for a tiny model on a CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from ftcompare.plan import checked_config, load_config, resolve_run

CPU = torch.device("cpu")


def make_spec(model_path: Path, strategy: str, entry: dict | None = None, **training):
    """`strategy` as config.yaml has it, or as `entry` (a strategy entry) says."""
    config = load_config()
    config["model"]["name_or_path"] = str(model_path)
    if entry is not None or strategy not in config["strategies"]:
        config["strategies"][strategy] = entry
    config["training"].update(
        {
            "max_length": 64,
            "epochs": 1,
            "batch_size": 16,
            "eval_batch_size": 64,
            "log_every_steps": 5,
            "checkpoint_every_minutes": None,
            **training,
        }
    )
    return resolve_run(checked_config(config), strategy=strategy, seed=0)


def tokenized_sample(
    folder: Path, imdb_sample: Path, model_path: Path, *, train_size: int, test_size: int, max_length: int = 64
) -> Path:
    """The IMDB sample prepared (train_size reviews, a fifth of them for validation, and
    test_size test reviews) and tokenized at `max_length` tokens by `model_path`'s tokenizer."""
    from ftcompare.data import prepare, tokenize_splits, write_prepared

    prepared = prepare(
        {
            "source": "parquet",
            "train": str(imdb_sample / "train.parquet"),
            "test": str(imdb_sample / "test.parquet"),
            "text_column": "text",
            "label_column": "label",
            "train_size": train_size,
            "test_size": test_size,
            "validation_fraction": 0.2,
            "split_seed": 42,
        }
    )
    paths = {split: folder / f"{split}.parquet" for split in ("train", "validation", "test")}
    write_prepared(prepared, out_paths=paths, summary_path=folder / "summary.json")
    out = folder / "tokenized"
    tokenize_splits(split_paths=paths, model_name_or_path=str(model_path), max_length=max_length, out_dir=out)
    return out


def cell_runs(workdir: Path) -> Path:
    """The runs folder of a one-cell study run in `workdir`: results/runs/<task>/<model>."""
    found = sorted(p for p in (Path(workdir) / "results" / "runs").glob("*/*") if p.is_dir())
    assert len(found) == 1, f"expected one task/model folder under {workdir}/results/runs, found {found}"
    return found[0]


def cell_tuning(workdir: Path) -> Path:
    """The tuning folder of a one-cell study: results/tuning/<task>/<model>."""
    found = sorted(p.parent for p in (Path(workdir) / "results" / "tuning").glob("*/*/selected.yaml"))
    assert len(found) == 1, f"expected one tuned task/model under {workdir}/results/tuning, found {found}"
    return found[0]


def tokenized_pairs(folder: Path, model: str, firsts: list[str], seconds: list[str], *, max_length: int = 64) -> Path:
    """Sentence pairs (`firsts[i]`, `seconds[i]`, labels alternating) as every split of a
    prepared pair task, tokenized at `max_length` tokens by `model`'s tokenizer."""
    import pandas as pd

    from ftcompare.data import PreparedData, prepared_text_columns, tokenize_splits, write_prepared

    frame = pd.DataFrame({"text": firsts, "text_pair": seconds, "label": [i % 2 for i in range(len(firsts))]})
    prepared = PreparedData(
        splits={split: frame for split in ("train", "validation", "test")},
        num_labels=2,
        dropped_empty={},
        text_columns={"text": "sentence1", "text_pair": "sentence2"},
    )
    paths = {split: folder / f"{split}.parquet" for split in ("train", "validation", "test")}
    write_prepared(prepared, out_paths=paths, summary_path=folder / "summary.json")
    out = folder / "tokenized"
    tokenize_splits(
        split_paths=paths,
        model_name_or_path=model,
        max_length=max_length,
        out_dir=out,
        text_columns=prepared_text_columns(paths["train"]),
    )
    return out


# Runs each snippet in one Python process (each in a namespace of its own, as if pasted
# alone), and prints what each printed. The tiny models' 32-wide layers are narrower than
# the blocks bitsandbytes' CPU backend repacks 4-bit weights into for inference on CPUs
# with AVX512-BF16 ("shape [32, 0] is invalid"; ftcompare.model.build._no_cpu_4bit_repacking):
# a snippet loading a QLoRA run as a user would, outside ftcompare, runs with that
# repacking off here; real models are wide enough.
RUN_SNIPPETS = """
import contextlib, io, json, sys
import bitsandbytes.nn.modules as _m
_m.has_avx512bf16 = lambda: False
out = {}
for name, code in json.load(sys.stdin).items():
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code, {"__name__": "__main__"})
    out[name] = printed.getvalue()
print(json.dumps(out))
"""


def run_snippets(snippets: dict[str, str], *, cwd: Path) -> dict[str, str]:
    """{name: what its snippet printed}, the snippets run in one process from `cwd`."""
    proc = subprocess.run(
        [sys.executable, "-c", RUN_SNIPPETS],
        input=json.dumps(snippets),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
