"""knn-bank rows carry the identity columns knn's rows carry, and name what this run was given.

Found by ``benchmarks/soak.py``: two byte-identical checkpoint files share one cache entry, and
knn-bank rows named the file of whoever extracted first, whatever the second user passed.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from typer.testing import CliRunner

from dinoeval.cli import app
from dinoeval.models import ViTArch, build_vit
from dinoeval.results import read_results

runner = CliRunner()
TRAIN, VAL = "digits:train[:60]", "digits:test[:20]"


@pytest.fixture
def two_copies(tmp_path):
    """A width-32 depth-1 ViT saved, and a byte-identical copy under another name."""
    torch.manual_seed(0)
    vit = build_vit(ViTArch(embed_dim=32, depth=1, num_heads=2, patch_size=4, img_size=(8, 8)))
    a = tmp_path / "alice.pth"
    torch.save(vit.state_dict(), a)
    b = tmp_path / "bob.pth"
    shutil.copyfile(a, b)
    return str(a), str(b)


def _extract(ckpt, data, cache):
    r = runner.invoke(app, ["extract", "--ckpt", ckpt, "--data", data, "--img-size", "8",
                            "--out", str(cache)])
    assert r.exit_code == 0, r.output


def _entries(cache):
    return sorted((p for p in cache.iterdir() if (p / "meta.json").exists()),
                  key=lambda p: ":train" not in (p / "meta.json").read_text())


def _bank(train, val, out, *extra):
    # --max-memory bounds the whole process: a long pytest run holds more than the default 1GB
    return runner.invoke(app, ["knn-bank", "--train-feats", str(train), "--val-feats", str(val),
                               "--k", "3", "--max-memory", "64GB", "--out", str(out), *extra])


def test_bank_rows_name_this_runs_checkpoint_and_carry_identity(two_copies, tmp_path):
    alice, bob = two_copies
    cache, out = tmp_path / "cache", tmp_path / "r.csv"
    for ckpt in (alice, bob):  # bob's extraction reuses alice's entries (same weights)
        _extract(ckpt, TRAIN, cache)
        _extract(ckpt, VAL, cache)
    train, val = _entries(cache)
    r = _bank(train, val, out, "--ckpt", bob)
    assert r.exit_code == 0, r.output
    df = read_results(out)
    assert set(df["backbone"]) == {bob}  # was alice.pth: the entry's first writer
    row = df.iloc[0]
    assert (row.train_data, row.train_n, row.data, row.data_n, row.resolution) == (
        TRAIN, 60, VAL, 20, "8")
    r = _bank(train, val, out)  # no --ckpt: the spec recorded in the entry
    assert r.exit_code == 0, r.output
    assert read_results(out)["backbone"].iloc[-1] == alice


def test_bank_refuses_a_foreign_checkpoint_and_mixed_networks(two_copies, tmp_path):
    alice, _ = two_copies
    other = tmp_path / "other.pth"
    torch.manual_seed(1)
    torch.save(build_vit(ViTArch(embed_dim=32, depth=1, num_heads=2, patch_size=4,
                                 img_size=(8, 8))).state_dict(), other)
    cache_a, cache_o = tmp_path / "a", tmp_path / "o"
    _extract(alice, TRAIN, cache_a)
    _extract(alice, VAL, cache_a)
    _extract(str(other), VAL, cache_o)
    train, val = _entries(cache_a)
    r = _bank(train, val, tmp_path / "r.csv", "--ckpt", str(other))
    assert r.exit_code == 2 and "is not the checkpoint these features were extracted" in r.output
    r = _bank(train, _entries(cache_o)[0], tmp_path / "r.csv")
    assert r.exit_code == 2 and "different networks" in r.output, r.output
    r = _bank(train, val, tmp_path / "r.csv", "--k", "61")
    assert r.exit_code == 2 and "larger than the bank" in r.output, r.output
    assert not (tmp_path / "r.csv").exists()
