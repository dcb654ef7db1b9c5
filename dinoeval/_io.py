"""Safe file writing for a shared lab: atomic replaces, umask-respecting modes, locks, disk full.

Every file dinoeval writes for later reading (results tables, their config sidecars, feature-cache
entries, k-NN banks, checkpoints) goes through :func:`atomic_write` or :func:`atomic_dir`:

* the content is written to a temporary name in the destination folder (same filesystem, so the
  final ``os.replace`` is atomic), flushed and ``fsync``-ed, then renamed over the old file: a
  reader or a killed writer sees the old or the new complete file, never a partial one;
* the final file gets mode ``0666 & ~umask`` and a folder ``0777 & ~umask``, like a file made with
  ``open()``/``mkdir`` (``mkstemp``/``mkdtemp`` would leave them owner-only);
* a full disk (``ENOSPC``/``EDQUOT``, or numpy's short-write error) becomes a one-line
  :class:`DiskFullError` naming the destination, and the temporary file is removed.

:func:`locked` serialises read-modify-write cycles of several processes on one file
(``fcntl.flock`` on a sibling ``.<name>.lock`` file); :func:`try_lock_exclusive` takes a lock that
a second holder refuses at once (a run folder).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from dinoeval.errors import DinoevalError

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# numpy's ndarray.tofile reports a short write without an errno: "256000 requested and 153568 written"
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


class DiskFullError(DinoevalError):
    """A write failed because the filesystem (or the user's quota) is full."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(f"cannot write {path}: disk full (no space left on the device); free "
                         "space there or choose another location")
        self.path = str(path)

    def __reduce__(self) -> tuple[object, ...]:
        return (DiskFullError, (self.path,))


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it was raised from) says the disk or quota is full."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, DiskFullError):
            return True
        if isinstance(e, OSError) and (e.errno in _DISK_FULL_ERRNOS
                                       or _SHORT_WRITE.search(str(e))):
            return True
        e = e.__cause__ or e.__context__
    return False


def _nearly_full(folder: Path) -> bool:
    """Less than 1 MiB left for this user in ``folder`` (libraries such as torch report a full
    disk as a bare write failure without an errno)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1 << 20


def _write_failed_for_space(err: BaseException, folder: Path) -> bool:
    if isinstance(err, DiskFullError):
        return False  # already says so
    return is_disk_full(err) or (isinstance(err, (OSError, RuntimeError)) and _nearly_full(folder))


def current_umask() -> int:
    """This process's umask, read without changing it (Linux ``/proc``; else set and restore)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # not thread-safe, hence only the fallback
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from ``open()``: ``0666 & ~umask``."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode a new folder gets from ``mkdir``: ``0777 & ~umask``."""
    return 0o777 & ~current_umask()


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (not possible on every filesystem: then a no-op)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str | Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, fsync it, give it the umask's mode and rename it onto ``path``.

    ``tmp_path`` is a fresh empty file ``.<name>.<random>.tmp<suffix>`` beside ``path``. Any failure
    removes it and leaves ``path`` as it was; a full disk raises :class:`DiskFullError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the temp name ends in the final suffix: np.save(tmp) would otherwise append ".npy"
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                                   dir=path.parent)
        os.close(fd)
    except OSError as err:
        if is_disk_full(err):
            raise DiskFullError(path) from err
        raise
    try:
        write(tmp)
        _fsync_file(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as err:
        full = _write_failed_for_space(err, path.parent)  # before the temp file frees its space
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise DiskFullError(path) from err
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


TMP_PREFIX = ".tmp-"


def atomic_dir(final: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` in a fresh folder ``.tmp-*`` beside ``final``, then rename it to ``final``.

    The files are fsync-ed; the folder gets mode ``0777 & ~umask`` and its files ``0666 & ~umask``.
    A crash leaves only a ``.tmp-*`` folder (see :func:`clean_stale_tmp`), never a ``final`` that
    looks complete. A full disk raises :class:`DiskFullError`.
    """
    final = Path(final)
    parent = final.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=_tmp_prefix()))
    except OSError as err:
        if is_disk_full(err):
            raise DiskFullError(final) from err
        raise
    try:
        write(tmp)
        fmode = file_mode()
        for f in tmp.iterdir():
            if f.is_file():
                _fsync_file(f)
                os.chmod(f, fmode)
        os.chmod(tmp, dir_mode())
        fsync_dir(tmp)
        _replace_dir(tmp, final)
    except BaseException as err:
        if _write_failed_for_space(err, parent):
            raise DiskFullError(final) from err
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(parent)
    return final


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` onto ``final``; an existing ``final`` (maybe just written by another process)
    is first renamed aside and removed, so the swap never fails halfway."""
    for _ in range(100):
        try:
            os.replace(tmp, final)
            return
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        aside = final.parent / f"{_tmp_prefix()}old-{os.urandom(4).hex()}"
        try:
            os.replace(final, aside)
        except FileNotFoundError:  # another writer moved it first: try again
            continue
        shutil.rmtree(aside, ignore_errors=True)
    raise OSError(errno.EBUSY, f"cannot replace {final}: other writers keep recreating it")


def clean_stale_tmp(parent: str | Path, *, older_than: float = 3600.0) -> list[Path]:
    """Remove ``.tmp-*`` folders/files under ``parent`` left by killed writers; returns them.

    A temporary entry is stale when its writer (``.tmp-<pid>@<host>~...``) ran on this host and
    is gone, or when it has not been modified for ``older_than`` seconds (a writer on another host
    sharing the folder, whose pid means nothing here). A live writer's folder is never removed.
    """
    removed = []
    now = time.time()
    for p in Path(parent).glob(f"{TMP_PREFIX}*"):
        pid = _local_pid_in_name(p.name)
        try:  # a writer appending to a big file touches the file, not its folder
            age = now - max([p.stat().st_mtime] + ([f.stat().st_mtime for f in p.iterdir()]
                                                   if p.is_dir() else []))
        except OSError:
            continue
        if (pid is not None and pid != os.getpid() and not _pid_alive(pid)) or age > older_than:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _tmp_prefix() -> str:
    """``.tmp-<pid>@<host>~``: who writes the temporary folder (host names hold no ``@``/``~``)."""
    return f"{TMP_PREFIX}{os.getpid()}@{socket.gethostname()}~"


def _local_pid_in_name(name: str) -> int | None:
    """The writer's pid when the temporary name says it runs on this host, else None."""
    m = re.match(rf"{re.escape(TMP_PREFIX)}(\d+)@(.+?)~", name)
    return int(m.group(1)) if m and m.group(2) == socket.gethostname() else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def lock_path(path: str | Path) -> Path:
    """The sibling lock file of ``path``: ``.<name>.lock`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``'s sibling lock file (waits for other holders).

    Serialises read-modify-write cycles (appending rows to a table) across processes; the lock is
    released when the block ends or the process dies. The lock file itself is left in place
    (removing it would let two processes lock two different files).
    """
    lp = lock_path(path)
    lp.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


class LockHeld(DinoevalError):
    """Another process holds an exclusive lock; the message names it."""


def try_lock_exclusive(lock_file: str | Path, what: str) -> IO[str]:
    """Take an exclusive lock on ``lock_file`` at once, or raise :class:`LockHeld` naming the holder.

    The holder writes ``{"pid", "host", "since"}`` into the file. Keep the returned file open for
    as long as the lock should be held; closing it (or the process ending) releases it.
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    f = open(lock_file, "a+")  # noqa: SIM115 - the open file is the lock
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        try:
            holder = json.loads(f.read() or "{}")
        except ValueError:
            holder = {}
        f.close()
        who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, since "
               f"{holder.get('since', '?')}") if holder else "another process"
        raise LockHeld(f"{what} is in use by {who} ({lock_file}); wait for it to finish or "
                       "choose another folder") from None
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    f.flush()
    return f
