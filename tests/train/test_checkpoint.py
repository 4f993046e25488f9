"""Tests for ftcompare.train.checkpoint: atomic, checksummed checkpoints that survive kills and full disks."""

from __future__ import annotations

import errno
import logging
import types

import pytest
import torch

from ftcompare.train import checkpoint as ckpt


def test_truncated_checkpoint_falls_back_to_previous(tmp_path, caplog):
    ckpt.save_checkpoint({"step": 1}, directory=tmp_path, step=1)
    newest = ckpt.save_checkpoint({"step": 2}, directory=tmp_path, step=2)
    newest.write_bytes(newest.read_bytes()[:20])  # truncated by a crash or a bad disk
    with caplog.at_level(logging.WARNING):
        state, path = ckpt.load_latest_checkpoint(tmp_path)
    assert state == {"step": 1} and path.name == "step-000000001.pt"
    assert "corrupt (checksum mismatch)" in caplog.text
    assert (tmp_path / "step-000000002.pt.corrupt").exists()


def test_only_corrupt_checkpoints_means_start_from_scratch(tmp_path):
    path = ckpt.save_checkpoint({"step": 1}, directory=tmp_path, step=1)
    path.with_suffix(".sha256").unlink()  # killed between the checkpoint and its checksum
    assert ckpt.load_latest_checkpoint(tmp_path) is None


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        # what torch.save itself raises when a write fails part-way
        RuntimeError("[enforce fail at inline_container.cc] unexpected pos; No space left on device"),
    ],
    ids=["oserror", "torch-runtimeerror"],
)
def test_disk_full_while_checkpointing_keeps_previous_and_continues(tmp_path, monkeypatch, caplog, error):
    ckpt.save_checkpoint({"step": 1}, directory=tmp_path, step=1)

    def disk_full(obj, handle):
        handle.write(b"partial")
        raise error

    monkeypatch.setattr(torch, "save", disk_full)
    with caplog.at_level(logging.WARNING):
        assert ckpt.save_checkpoint({"step": 2}, directory=tmp_path, step=2) is None
    assert "NOT written" in caplog.text and "No space left on device" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000001.pt", "step-000000001.sha256"]
    monkeypatch.undo()
    assert ckpt.load_latest_checkpoint(tmp_path)[0] == {"step": 1}


def test_disk_full_is_named_when_torch_only_says_unexpected_pos(tmp_path, monkeypatch, caplog):
    # What torch.save raised on a full disk in the field: no errno, no "space" anywhere.
    def disk_full(obj, handle):
        handle.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 48640 vs 48534")

    monkeypatch.setattr(torch, "save", disk_full)
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=30_000))
    with caplog.at_level(logging.WARNING):
        assert ckpt.save_checkpoint({"w": torch.zeros(100_000)}, directory=tmp_path, step=2) is None
    assert (
        f"NOT written (disk full: 30 kB free in {tmp_path}, the checkpoint needs about 400 kB; free some space"
        in caplog.text
    )
    assert "unexpected pos 48640 vs 48534" in caplog.text  # the original error stays visible


def test_only_the_last_two_checkpoints_are_kept(tmp_path):
    for step in range(1, 5):
        ckpt.save_checkpoint({"step": step}, directory=tmp_path, step=step)
    assert [p.name for p in ckpt.latest_paths(tmp_path)] == ["step-000000004.pt", "step-000000003.pt"]


def test_temporary_files_do_not_follow_a_planted_symlink(tmp_path):
    from ftcompare.contract import write_json

    victim = tmp_path / "victim"
    victim.write_text("untouched")
    directory = tmp_path / "ckpt"
    directory.mkdir()
    # The fixed temporary names the writers used to use.
    (directory / "step-000000001.pt.tmp").symlink_to(victim)
    (directory / "step-000000001.sha256.tmp").symlink_to(victim)
    (tmp_path / "train.json.tmp").symlink_to(victim)
    path = ckpt.save_checkpoint({"step": 1}, directory=directory, step=1)
    write_json(tmp_path / "train.json", {"status": "ok"})
    assert victim.read_text() == "untouched"
    assert ckpt.load_latest_checkpoint(directory)[0] == {"step": 1} and path.is_file()
    assert not path.is_symlink() and not (tmp_path / "train.json").is_symlink()


# --- divergence -------------------------------------------------------------------------
