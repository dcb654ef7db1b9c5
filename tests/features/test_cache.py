"""The feature cache in a shared lab: damaged entries heal, dead writers' temp folders go, entries
respect the umask, and a full disk only costs the caching (issue 17)."""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from dinoeval.features import FeatureCache, extract_features
from dinoeval.models import load_backbone
from tests.conftest import make_source


@pytest.fixture
def backbone(tiny_vit, tmp_path):
    p = tmp_path / "tiny.pth"
    torch.save(tiny_vit.state_dict(), p)
    return load_backbone(str(p))


def _zero_bytes(entry):
    (entry / "features.npy").write_bytes(b"")


def _truncated(entry):
    f = entry / "features.npy"
    f.write_bytes(f.read_bytes()[:-50])


def _bad_json(entry):
    (entry / "meta.json").write_text('{"complete": tr')


def _labels_gone_short(entry):
    np.save(entry / "labels.npy", np.zeros(3, np.int64))


def _features_header_only(entry):
    f = entry / "features.npy"
    f.write_bytes(f.read_bytes()[:128])


@pytest.mark.parametrize("damage", [_zero_bytes, _truncated, _bad_json, _labels_gone_short,
                                    _features_header_only])
def test_any_unreadable_entry_is_recomputed_and_replaced(backbone, tmp_path, damage):
    src, cache = make_source(n=12), tmp_path / "cache"
    first = extract_features(backbone, src, cache_dir=str(cache))
    entry = FeatureCache(cache).path(first.meta)
    damage(entry)
    again = extract_features(backbone, src, cache_dir=str(cache))
    assert not again.meta.get("cached")
    np.testing.assert_array_equal(again.features, first.features)
    healed = extract_features(backbone, src, cache_dir=str(cache))
    assert healed.meta.get("cached")
    np.testing.assert_array_equal(healed.features, first.features)


def test_a_dead_writers_temp_folder_is_removed_on_the_next_write(backbone, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    killed = cache / f".tmp-{dead}@{host}~x1"
    killed.mkdir()
    (killed / "features.npy").write_bytes(b"half")
    live = cache / f".tmp-{os.getpid()}@{host}~x2"  # a writer still at work (this process)
    live.mkdir()
    extract_features(backbone, make_source(n=12), cache_dir=str(cache))
    assert not killed.exists() and live.exists()


def test_entries_respect_the_umask(backbone, tmp_path):
    old = os.umask(0o002)
    try:
        fs = extract_features(backbone, make_source(n=12), cache_dir=str(tmp_path / "c"))
    finally:
        os.umask(old)
    entry = FeatureCache(tmp_path / "c").path(fs.meta)
    assert entry.stat().st_mode & 0o777 == 0o775
    assert {f.name: f.stat().st_mode & 0o777 for f in entry.iterdir()} == {
        n: 0o664 for n in ("features.npy", "labels.npy", "indices.npy", "meta.json")}


def test_a_full_disk_skips_the_cache_and_says_so(backbone, tmp_path, monkeypatch, caplog):
    src, cache = make_source(n=12), tmp_path / "cache"
    real_save = np.save

    def full(file, arr, *a, **k):
        if str(file).endswith("features.npy"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(file, arr, *a, **k)

    monkeypatch.setattr(np, "save", full)
    with caplog.at_level(logging.WARNING):
        fs = extract_features(backbone, src, cache_dir=str(cache))
    assert fs.features.shape[0] == 12 and not fs.meta.get("cached")
    entry = FeatureCache(cache).path(fs.meta)
    assert (f"cannot write {entry}: disk full (no space left on the device); free space there or "
            "choose another location; continuing without caching these features") in caplog.text
    assert os.listdir(cache) == []  # no temp folder left behind
    monkeypatch.setattr(np, "save", real_save)
    assert not extract_features(backbone, src, cache_dir=str(cache)).meta.get("cached")
    assert extract_features(backbone, src, cache_dir=str(cache)).meta.get("cached")


def test_debug_flag_shows_the_traceback_of_an_eoferror(monkeypatch):
    """Click turns an EOFError into "Aborted." unless dinoeval prints it first."""
    from typer.testing import CliRunner

    import dinoeval.pipeline
    from dinoeval.cli import app

    def eof(*a, **k):
        raise EOFError("No data left in file")

    monkeypatch.setattr(dinoeval.pipeline, "run_knn", eof)
    monkeypatch.setenv("DINOEVAL_DEBUG", "1")
    r = CliRunner().invoke(app, ["knn", "--ckpt", "pixels", "--train", "digits:train[:60]",
                                 "--val", "digits:test[:20]", "--k", "5"])
    assert r.exit_code == 1
    assert "Traceback (most recent call last)" in r.output
    assert "EOFError: No data left in file" in r.output and "Aborted" not in r.output
