"""What a tokenized cache records of itself (tokenization.json, written by
`tokenization.tokenize_splits`): its one reader, torch-free, for the runs, the report and
`ftcompare predict`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftcompare.contract import ConfigError
from ftcompare.data.splits import text_columns_or_default


def tokenization_meta(directory: Path) -> dict[str, Any]:
    """What `tokenization.tokenize_splits` recorded of a cache (tokenization.json): the one
    reader of that file."""
    return json.loads((Path(directory) / "tokenization.json").read_text())


def tokenized_text_columns(directory: Path) -> dict[str, str | None]:
    """The source columns behind a cache's `text` and `text_pair` (a run records them)."""
    return text_columns_or_default(tokenization_meta(directory).get("text_columns"))


def check_tokenized_length(directory: Path, max_length: int) -> None:
    """Refuse a run whose `max_length` is not the one its tokenized cache was cut at: the
    cache is the one truth of that length, and a run that believed another would record it."""
    cut_at = int(tokenization_meta(directory)["max_length"])
    if cut_at != max_length:
        raise ConfigError(
            f"the run's training.max_length = {max_length}, but its tokenized data {str(directory)!r} was cut at "
            f"{cut_at} tokens: tokenize again at {max_length}, or run at {cut_at}"
        )
