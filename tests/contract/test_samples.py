"""The data samples committed under .test/data hold what .test/data/README.md says: the
columns a run reads, int64 labels 0/1 with both classes, no empty text, and no text in
both train and test (a test row seen in training would flatter every strategy)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

DATA = Path(__file__).resolve().parents[2] / ".test" / "data"

SAMPLES = {
    "imdb": (DATA, ["text"], (1000, 1000)),
    "sst2": (DATA / "sst2", ["sentence"], (600, 300)),
    "rte": (DATA / "rte", ["sentence1", "sentence2"], (600, 277)),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_rows(name):
    folder, texts, sizes = SAMPLES[name]
    frames = [pd.read_parquet(folder / f"{split}.parquet") for split in ("train", "test")]
    for frame, rows in zip(frames, sizes, strict=True):
        assert list(frame.columns) == [*texts, "label"]
        assert len(frame) == rows
        assert frame["label"].dtype == "int64"
        assert sorted(frame["label"].unique()) == [0, 1]
        for column in texts:
            assert frame[column].notna().all() and (frame[column].str.strip() != "").all()
    train, test = frames
    assert not set(train[texts].stack()) & set(test[texts].stack())
