"""Loaded by every Python process of one test's Snakemake run (its folder is put first
on PYTHONPATH): the Hugging Face Hub replaced by local files, and no network at all.

- Any internet socket connection or name lookup fails and is recorded.
- `huggingface_hub.snapshot_download` and `datasets.load_dataset` copy the models and
  data sets named in FAKE_HUB_MODELS / FAKE_HUB_DATASETS (JSON: id -> folder) instead
  of downloading. A data set's splits are its folder's <split>.parquet files, or with a
  configuration (load_dataset(id, config)) those of its subfolder <config>/; its `label`
  column is a ClassLabel named as the folder's label_names.json says, else neg/pos (as on
  the hub's IMDB). Called in a process with the hub switched off (HF_HUB_OFFLINE=1 /
  HF_DATASETS_OFFLINE=1), they fail as the real ones would.
- Every process that imports transformers records whether the hub was off for it.

Events go to the JSON-lines file FAKE_HUB_LOG, for the test to read.
"""

import fnmatch
import importlib.abc
import importlib.util
import json
import os
import shutil
import socket
import sys
from pathlib import Path

_LOG = os.environ["FAKE_HUB_LOG"]
_MODELS = json.loads(os.environ.get("FAKE_HUB_MODELS", "{}"))
_DATASETS = json.loads(os.environ.get("FAKE_HUB_DATASETS", "{}"))
_LOCAL_HOSTS = {None, "localhost", "127.0.0.1", "::1", b"localhost"}


def _record(event: str, **details) -> None:
    with open(_LOG, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"event": event, "pid": os.getpid(), "argv": sys.argv[:3], **details}) + "\n")


# --- no network ---------------------------------------------------------------------

_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _guarded(real):
    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL_HOSTS:
            _record("network", address=str(address))
            raise OSError(f"network access is forbidden in this test ({address})")
        return real(self, address)

    return connect


def _getaddrinfo_guarded(host, *args, **kwargs):
    if host not in _LOCAL_HOSTS:
        _record("network", address=str(host))
        raise socket.gaierror(f"name lookup is forbidden in this test ({host})")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded(_connect)
socket.socket.connect_ex = _guarded(_connect_ex)
socket.getaddrinfo = _getaddrinfo_guarded


# --- the fake hub ---------------------------------------------------------------------


def _offline(variable: str, what: str) -> None:
    if os.environ.get(variable) == "1":
        _record("offline-call", what=what)
        raise RuntimeError(f"{what}: {variable}=1, the hub is switched off in this process")


def _patch_hub(module) -> None:
    def snapshot_download(repo_id, *, local_dir=None, allow_patterns=None, **kwargs):
        _offline("HF_HUB_OFFLINE", f"snapshot_download({repo_id!r})")
        source = Path(_MODELS[repo_id])
        copied = []
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            name = str(path.relative_to(source))
            if allow_patterns is None or any(fnmatch.fnmatch(name, pattern) for pattern in allow_patterns):
                (Path(local_dir) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, Path(local_dir) / name)
                copied.append(name)
        _record("snapshot_download", repo_id=repo_id, allow_patterns=allow_patterns, copied=copied)
        return str(local_dir)

    module.snapshot_download = snapshot_download


def _patch_datasets(module) -> None:
    def load_dataset(name, config=None, *args, **kwargs):
        _offline("HF_DATASETS_OFFLINE", f"load_dataset({name!r})")
        import pandas as pd

        folder = Path(_DATASETS[name])
        _record("load_dataset", name=name, config=config)
        if config is not None:
            if not (folder / config).is_dir():  # as the hub's datasets says of an unknown configuration
                available = sorted(p.name for p in folder.iterdir() if p.is_dir())
                raise ValueError(f"BuilderConfig {config!r} not found. Available: {available}")
            folder = folder / config
        names_file = folder / "label_names.json"
        names = json.loads(names_file.read_text()) if names_file.is_file() else ["neg", "pos"]
        splits = {}
        for path in sorted(folder.glob("*.parquet")):
            frame = pd.read_parquet(path)
            features = module.Dataset.from_pandas(frame, preserve_index=False).features
            if "label" in features:
                features["label"] = module.ClassLabel(names=names)
            splits[path.stem] = module.Dataset.from_pandas(frame, features=features, preserve_index=False)
        return module.DatasetDict(splits)

    module.load_dataset = load_dataset


def _note_transformers(module) -> None:
    _record("import transformers", hf_hub_offline=os.environ.get("HF_HUB_OFFLINE"))


_PATCHES = {"huggingface_hub": _patch_hub, "datasets": _patch_datasets, "transformers": _note_transformers}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Runs a patch right after one of _PATCHES' modules has been imported."""

    def find_spec(self, name, path=None, target=None):
        if name not in _PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            _PATCHES[name](module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchAfterImport())
