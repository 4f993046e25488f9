"""Draw the committed samples under .test/data (README.md there says what each is).

    python .test/data/sample.py imdb ../shared/data/imdb .test/data
    python .test/data/sample.py sst2 SST-2/train.tsv SST-2/dev.tsv .test/data/sst2
    python .test/data/sample.py rte RTE/train.tsv RTE/dev.tsv .test/data/rte

IMDB: 1,000 train and 1,000 test reviews, each 500 negative / 500 positive, from the full
25k splits, stratified (scikit-learn's train_test_split, seed 8); the input files' SHA-256
are in README.md.

SST-2 and RTE: GLUE's original TSV files, taken from public GitHub repositories (the
exact repository, commit and path are at each function); the functions refuse any other
bytes (SHA-256 check), so the draw is reproducible. Test rows come from GLUE's dev split
(GLUE hides its test labels), train rows from its train split, each class drawn apart
with the same seed so that the labels are balanced.

Rows are written in shuffled order as Parquet (zstd) with the text column(s) and an int64
`label`, so a run reads them with `source: parquet` like the IMDB sample.
"""

import csv
import hashlib
import sys
from pathlib import Path

import pandas as pd

SEED = 8
ROWS = 1000

# GLUE's SST-2 (the Stanford Sentiment Treebank, binary), as GLUE distributes it
# (header `sentence<TAB>label`, label 0 = negative, 1 = positive), from
#   repo eyalbd2/Reproducing-AutoPrompt, commit 53e9e221b58e5ed882a56c9d8be838b895351165
#   train: glue_data/SST-2/train_full.tsv (GLUE's train.tsv renamed by that repository;
#          its own train.tsv is a small subset), 67,349 rows
#   dev:   glue_data/SST-2/dev.tsv, 872 rows
# Same text and labels, row for row, as YuxinHu1202/NLP data/SST-2/train.tsv (columns
# reordered; awake020/pytorch_Bert_sst2 differs in one row); the dev file is
# byte-identical to forest-snow/alps data/SST-2/test.tsv.
SST2_TRAIN_SHA256 = "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1"
SST2_DEV_SHA256 = "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"
SST2_TRAIN_PER_CLASS = 300
SST2_TEST_PER_CLASS = 150

# GLUE's RTE (PASCAL RTE 1, 2, 3 and 5, two classes), as GLUE distributes it (header
# `index<TAB>sentence1<TAB>sentence2<TAB>label`, label entailment / not_entailment), from
#   repo marcwww/nlu_eval, commit 1403aef7eeb8e0876e28835daf0fa64918bea396
#   train: data/RTE/train_copy.tsv, 2,490 rows
#   dev:   data/RTE/dev.tsv, 277 rows
# Not data/RTE/train.tsv there: it adds a space before row 2164's premise. train_copy.tsv
# has the same lines as amrnag/Specialized-Transformers data/RTE/{train,val}.tsv (GLUE's
# train split in two), dev.tsv is byte-identical to that repository's, and both match
# Hugging Face's nyu-mll/glue rte text and labels (an export in Ji-Yishan/MIEC-FYP RTE/).
RTE_TRAIN_SHA256 = "41e3a9b063433392343fad9e962cf2f58b681c78d8f71592f4186f0837246c5c"
RTE_DEV_SHA256 = "80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb"
RTE_TRAIN_PER_CLASS = 300
# Hugging Face's nyu-mll/glue rte numbers the classes this way; GLUE's TSV has names.
RTE_LABELS = {"entailment": 0, "not_entailment": 1}


def imdb(source: Path, out: Path) -> None:
    from sklearn.model_selection import train_test_split

    for split in ("train", "test"):
        frame = pd.read_parquet(source / f"{split}.parquet", columns=["text", "label"])
        sample, _ = train_test_split(frame, train_size=ROWS, stratify=frame["label"], random_state=SEED)
        sample.reset_index(drop=True).to_parquet(out / f"{split}.parquet", index=False, compression="zstd")


def sst2(train_tsv: Path, dev_tsv: Path, out: Path) -> None:
    train = _read_glue_tsv(train_tsv, SST2_TRAIN_SHA256, ["sentence", "label"])
    dev = _read_glue_tsv(dev_tsv, SST2_DEV_SHA256, ["sentence", "label"])
    train["label"] = train["label"].astype("int64")
    dev["label"] = dev["label"].astype("int64")
    # SST-2's train split is the treebank's phrases: 371 repeat, 5 of them with both labels.
    train = _unique(train, ["sentence"])
    test = _balanced(dev, SST2_TEST_PER_CLASS)
    train = _balanced(train, SST2_TRAIN_PER_CLASS)
    _write(train, test, ["sentence"], out)


def rte(train_tsv: Path, dev_tsv: Path, out: Path) -> None:
    columns = ["index", "sentence1", "sentence2", "label"]
    train = _read_glue_tsv(train_tsv, RTE_TRAIN_SHA256, columns)
    dev = _read_glue_tsv(dev_tsv, RTE_DEV_SHA256, columns)
    for frame in (train, dev):
        frame["label"] = frame["label"].map(RTE_LABELS).astype("int64")  # a new name fails here (NaN)
    train = _unique(train, ["sentence1", "sentence2"])
    # All of the dev split: 277 rows, 146 entailment / 131 not_entailment.
    test = dev.sample(frac=1, random_state=SEED).reset_index(drop=True)
    # GLUE's train and dev pairs are disjoint but share some premises and hypotheses;
    # keep train rows that share no text with the test rows, so no text is in both.
    seen = set(test["sentence1"]) | set(test["sentence2"])
    train = train[~train["sentence1"].isin(seen) & ~train["sentence2"].isin(seen)]
    train = _balanced(train, RTE_TRAIN_PER_CLASS)
    _write(train, test, ["sentence1", "sentence2"], out)


def _read_glue_tsv(path: Path, sha256: str, columns: list[str]) -> pd.DataFrame:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{path}: SHA-256 {digest}, expected {sha256} (see sample.py for the source)")
    # GLUE's TSVs have literal quotes (QUOTE_NONE) and texts such as "null" (no NA parsing).
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False, encoding="utf-8")
    if list(frame.columns) != columns:
        raise SystemExit(f"{path}: columns {list(frame.columns)}, expected {columns}")
    return frame


def _unique(frame: pd.DataFrame, texts: list[str]) -> pd.DataFrame:
    """One row per text; a text labelled both ways is dropped altogether."""
    conflicting = frame.groupby(texts)["label"].transform("nunique") > 1
    return frame[~conflicting].drop_duplicates(texts)


def _balanced(frame: pd.DataFrame, per_class: int) -> pd.DataFrame:
    parts = [frame[frame["label"] == label].sample(n=per_class, random_state=SEED) for label in (0, 1)]
    return pd.concat(parts).sample(frac=1, random_state=SEED).reset_index(drop=True)


def _write(train: pd.DataFrame, test: pd.DataFrame, texts: list[str], out: Path) -> None:
    columns = [*texts, "label"]
    train, test = train[columns].reset_index(drop=True), test[columns].reset_index(drop=True)
    for name, frame in (("train", train), ("test", test)):
        empty = frame[texts].apply(lambda column: column.str.strip() == "").any(axis=1)
        if empty.any() or not frame["label"].isin([0, 1]).all():
            raise SystemExit(f"{name}: {int(empty.sum())} empty texts or labels other than 0/1")
    shared = set(train[texts].stack()) & set(test[texts].stack())
    if shared:
        raise SystemExit(f"{len(shared)} texts are in both train and test")
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("train", train), ("test", test)):
        frame.to_parquet(out / f"{name}.parquet", index=False, compression="zstd")


TASKS = {"imdb": imdb, "sst2": sst2, "rte": rte}

if __name__ == "__main__":
    task, *paths = sys.argv[1:]
    TASKS[task](*map(Path, paths))
