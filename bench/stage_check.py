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

from ftcompare.allocator import prefer_expandable_segments  # noqa: E402 (torch-free)

prefer_expandable_segments()  # as the workflow's rule scripts do, before torch is imported

ROBERTA_BASE_VOCAB = 50265
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def prepare(*, train: Path, test: Path, out: Path, train_size: int, test_size: int, max_length: int) -> None:
    import pandas as pd
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    from ftcompare.data import prepare as prepare_data
    from ftcompare.data import write_prepared
    from ftcompare.tokenization import tokenize_splits

    tokenizer_dir = out / "tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    texts = pd.read_parquet(train)["text"].tolist()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=ROBERTA_BASE_VOCAB, min_frequency=2, special_tokens=SPECIAL_TOKENS)
    bpe.save_model(str(tokenizer_dir))
    # from_pretrained(dir): transformers 5 ignores vocab_file=/merges_file= arguments.
    tokenizer = RobertaTokenizerFast.from_pretrained(str(tokenizer_dir), model_max_length=512)
    tokenizer.save_pretrained(str(tokenizer_dir))

    # Tokenizing needs a model folder for its limits: a tiny RoBERTa with the real config
    # of positions is enough (its weights are never used).
    model_dir = _random_roberta(out / "tiny-model", tokenizer_dir=tokenizer_dir, tiny=True)
    prepared = prepare_data(
        {"source": "parquet", "train": str(train), "test": str(test), "text_column": "text",
         "label_column": "label", "train_size": train_size, "test_size": test_size,
         "validation_fraction": 0.1, "split_seed": 42}
    )  # fmt: skip
    paths = {split: out / "data" / f"{split}.parquet" for split in ("train", "validation", "test")}
    write_prepared(prepared, out_paths=paths, summary_path=out / "data" / "summary.json")
    tokenize_splits(split_paths=paths, model_name_or_path=str(model_dir), max_length=max_length, out_dir=out / "tokenized")
    for path in paths.values():
        path.unlink()  # the texts are not needed on the device
    print(json.dumps(prepared.summary(), indent=2))


def _random_roberta(folder: Path, *, tokenizer_dir: Path, tiny: bool = False) -> Path:
    import shutil

    from transformers import RobertaConfig, RobertaForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    # roberta-base's exact shape: RobertaConfig()'s defaults (12 layers, width 768) plus
    # its 514 positions (the default 512 would allow only 510 tokens), one token type and
    # its LayerNorm epsilon, as bench/throughput.py's write_random_model builds it.
    shape = {"vocab_size": ROBERTA_BASE_VOCAB, "max_position_embeddings": 514, "type_vocab_size": 1,
             "layer_norm_eps": 1e-5, "num_labels": 2}  # fmt: skip
    if tiny:
        shape.update(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config = RobertaConfig(**shape)
    RobertaForSequenceClassification(config).save_pretrained(str(folder))
    for item in tokenizer_dir.iterdir():
        shutil.copy(item, folder / item.name)
    return folder


def run(*, bundle: Path, out: Path, strategies: list[str], epochs: int, seed: int) -> None:
    from ftcompare import jobs
    from ftcompare.config import load_yaml, resolve_run, validate_config

    jobs.setup_logging(out / "stage_check.log")
    model_dir = _random_roberta(out / "roberta-base-random", tokenizer_dir=bundle / "tokenizer")
    config = load_yaml(REPO_ROOT / "config" / "config.yaml")
    config["model"]["name_or_path"] = str(model_dir)
    config["training"]["epochs"] = epochs
    config["seeds"] = [seed]
    validated = validate_config(config)
    train_records, eval_records = [], []
    for strategy in strategies:
        spec = resolve_run(validated, strategy=strategy, seed=seed)
        run_dir = out / "runs" / strategy / f"seed{seed}"
        jobs.finetune(
            spec=spec, tokenized_dir=bundle / "tokenized", model_dir=run_dir / "model",
            record_path=run_dir / "train.json", checkpoint_dir=out / "checkpoints" / strategy,
            attempt_path=run_dir / "attempt.json", retry_marker="first",
        )  # fmt: skip
        jobs.evaluate(
            train_record_path=run_dir / "train.json", tokenized_dir=bundle / "tokenized",
            model_dir=run_dir / "model", record_path=run_dir / "eval.json",
            predictions_path=run_dir / "predictions.parquet",
        )  # fmt: skip
        train_records.append(run_dir / "train.json")
        eval_records.append(run_dir / "eval.json")
    jobs.report(
        train_records=train_records, eval_records=eval_records, summary_path=out / "summary.csv",
        report_path=out / "report.md", figures_dir=out / "figures",
    )  # fmt: skip


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
    go = commands.add_parser("run", help="fine-tune + evaluate every strategy on this device")
    go.add_argument("--bundle", type=Path, required=True)
    go.add_argument("--out", type=Path, required=True)
    go.add_argument("--strategies", nargs="+", default=["full", "lora", "qlora", "ia3"])
    go.add_argument("--epochs", type=int, default=1)
    go.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(train=args.train, test=args.test, out=args.out, train_size=args.train_size, test_size=args.test_size,
                max_length=args.max_length)  # fmt: skip
    else:
        run(bundle=args.bundle, out=args.out, strategies=args.strategies, epochs=args.epochs, seed=args.seed)


if __name__ == "__main__":
    main()
