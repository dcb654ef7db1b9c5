"""dinoeval._io: atomic writes with the umask's modes, disk full, stale temp folders, locks."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dinoeval._io import (
    DiskFullError,
    LockHeld,
    atomic_dir,
    atomic_write,
    clean_stale_tmp,
    try_lock_exclusive,
)


@pytest.fixture
def umask_002():
    old = os.umask(0o002)
    yield
    os.umask(old)


def test_atomic_write_and_dir_give_the_umask_modes(tmp_path, umask_002):
    f = atomic_write(tmp_path / "a.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    assert f.stat().st_mode & 0o777 == 0o664
    d = atomic_dir(tmp_path / "entry", lambda tmp: np.save(tmp / "x.npy", np.zeros(3)))
    assert d.stat().st_mode & 0o777 == 0o775
    assert (d / "x.npy").stat().st_mode & 0o777 == 0o664
    os.umask(0o077)
    f = atomic_write(tmp_path / "b.bin", lambda tmp: Path(tmp).write_bytes(b"x"))
    assert f.stat().st_mode & 0o777 == 0o600


def _enospc(_tmp):
    raise OSError(errno.ENOSPC, "No space left on device")


def _numpy_short_write(_tmp):
    raise OSError("256000 requested and 153568 written")


@pytest.mark.parametrize("fail", [_enospc, _numpy_short_write])
def test_a_full_disk_is_one_line_naming_the_path(tmp_path, fail):
    target = tmp_path / "t.csv"
    target.write_text("old")
    with pytest.raises(DiskFullError, match=rf"cannot write {target}: disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["t.csv"]
    with pytest.raises(DiskFullError, match=r"entry: disk full"):
        atomic_dir(tmp_path / "entry", lambda tmp: fail(tmp))
    assert os.listdir(tmp_path) == ["t.csv"]


def test_a_real_full_tmpfs(tmp_path):
    """A 64 KiB tmpfs when this machine lets us mount one (root in a container); else skipped."""
    import torch

    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        big = np.zeros(64_000, np.float32)
        with pytest.raises(DiskFullError, match=rf"{mnt}/f.npy: disk full"):
            atomic_write(mnt / "f.npy", lambda tmp: np.save(tmp, big))
        with pytest.raises(DiskFullError, match=rf"{mnt}/c.pth: disk full"):
            atomic_write(mnt / "c.pth", lambda tmp: torch.save({"w": torch.from_numpy(big)}, tmp))
        with pytest.raises(DiskFullError, match=rf"{mnt}/e: disk full"):
            atomic_dir(mnt / "e", lambda tmp: np.save(tmp / "f.npy", big))
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_clean_stale_tmp_keeps_a_live_writers_folder(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    stale = tmp_path / f".tmp-{dead}@{host}~abc"
    live = tmp_path / f".tmp-{os.getpid()}@{host}~def"
    old_foreign = tmp_path / ".tmp-xyz"
    other_host = tmp_path / f".tmp-{dead}@not-{host}~ghi"  # its pid means nothing here
    for d in (stale, live, old_foreign, other_host):
        d.mkdir()
    long_ago = time.time() - 7200
    os.utime(old_foreign, (long_ago, long_ago))
    young_foreign = tmp_path / ".tmp-young"
    young_foreign.mkdir()
    removed = clean_stale_tmp(tmp_path)
    assert sorted(removed) == sorted([stale, old_foreign])
    assert live.exists() and young_foreign.exists() and other_host.exists()


def test_exclusive_lock_names_the_holder(tmp_path):
    lock = tmp_path / "run" / ".lock"
    code = (f"from dinoeval._io import try_lock_exclusive; import time; "
            f"f = try_lock_exclusive({str(lock)!r}, 'x'); print('held', flush=True); "
            "time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=rf"run folder is in use by pid {holder.pid} on host "):
            try_lock_exclusive(lock, "run folder")
    finally:
        holder.kill()
        holder.wait()
    f = try_lock_exclusive(lock, "run folder")  # released when the holder died
    assert f"{os.getpid()}" in lock.read_text()
    f.close()


def test_a_knn_bank_file_gets_the_umask_mode(tmp_path, umask_002):
    from dinoeval.eval._bank import write_bank

    out = write_bank(np.ones((5, 4), np.float32), tmp_path / "bank.npy", "float16")
    assert out.stat().st_mode & 0o777 == 0o664 and np.load(out).shape == (5, 4)
    assert os.listdir(tmp_path) == ["bank.npy"]
