"""Draw the committed IMDB sample: 1,000 train and 1,000 test reviews, each 500
negative / 500 positive, from the full 25k splits.

    python .test/data/sample.py ../shared/data/imdb .test/data

Stratified (scikit-learn's train_test_split, seed 8), so the draw is reproducible from
the same input files (their SHA-256 are in README.md). Rows are written in shuffled
order with the source's `text` and `label` columns only.
"""

import sys
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

SEED = 8
ROWS = 1000


def main(source: Path, out: Path) -> None:
    for split in ("train", "test"):
        frame = pd.read_parquet(source / f"{split}.parquet", columns=["text", "label"])
        sample, _ = train_test_split(frame, train_size=ROWS, stratify=frame["label"], random_state=SEED)
        sample.reset_index(drop=True).to_parquet(out / f"{split}.parquet", index=False, compression="zstd")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
