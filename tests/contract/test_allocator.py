"""The rule scripts' process set-up: expandable CUDA segments unless the user chose."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftcompare.contract import ALLOCATOR_VARIABLES, allocator_setting, prefer_expandable_segments

SCRIPTS = Path(__file__).resolve().parents[2] / "workflow" / "scripts"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ALLOCATOR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_expandable_segments_by_default(clean_env: pytest.MonkeyPatch) -> None:
    assert allocator_setting() is None
    prefer_expandable_segments()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert allocator_setting() == "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"


@pytest.mark.parametrize("name", ALLOCATOR_VARIABLES)
def test_a_users_setting_wins(clean_env: pytest.MonkeyPatch, name: str) -> None:
    clean_env.setenv(name, "max_split_size_mb:128")
    prefer_expandable_segments()
    assert os.environ[name] == "max_split_size_mb:128"
    assert all(not os.environ.get(other) for other in ALLOCATOR_VARIABLES if other != name)
    assert allocator_setting() == f"{name}=max_split_size_mb:128"


def test_rule_scripts_set_it_before_torch_is_imported() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES}
    probe = "import _bootstrap, os, sys; print(os.environ.get('PYTORCH_CUDA_ALLOC_CONF'), 'torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=SCRIPTS, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["expandable_segments:True", "False"]


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.py") if p.name != "_bootstrap.py"))
def test_every_rule_script_imports_bootstrap_first(script: str) -> None:
    # Any import before it could load torch before the allocator is configured.
    tree = ast.parse((SCRIPTS / script).read_text())
    first = next(node for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom))
    assert isinstance(first, ast.Import) and first.names[0].name == "_bootstrap", script
