"""Checkpoints pickled with protocol 4 or 5, read by torch's weights-only loader.

``torch.save(..., pickle_protocol=4)`` (common in DINO-era training scripts, and what some
converters write) uses opcodes that torch's weights-only unpickler does not implement: it fails
with "Unsupported operand 149" (``FRAME``) after warning "Detected pickle protocol 4". The
standard remedy, ``weights_only=False``, would run arbitrary code.

:func:`downgrade_pickle` rewrites such a pickle, opcode by opcode and without running any of it
(:mod:`pickletools` only parses), into the protocol-2 opcodes torch's weights-only unpickler
reads; that unpickler, with its allow-list, then loads the result, so nothing outside the
allow-list can be unpickled. The rewriting (see the opcode table in :mod:`pickletools`):

* ``PROTO 4/5`` -> ``PROTO 2``; ``FRAME`` dropped (framing only);
* ``SHORT_BINUNICODE`` / ``BINUNICODE8`` -> ``BINUNICODE``;
* ``MEMOIZE`` -> ``BINPUT``/``LONG_BINPUT`` of the index it implies (the memo's size);
* ``STACK_GLOBAL`` -> ``GLOBAL module name`` (both strings read off the stream; their pushes
  are removed);
* ``SHORT_BINBYTES`` / ``BINBYTES`` / ``BINBYTES8`` -> ``_codecs.encode(str, "latin1")``, how
  protocol 2 writes bytes (numpy scalars carry theirs so).

Any other opcode outside protocol 2 (``NEWOBJ_EX``, ``ADDITEMS``, ``FROZENSET``, out-of-band
buffers) raises :class:`PickleDowngradeError`, naming it.

:func:`downgrade_checkpoint` applies this to a ``torch.save`` file: the ``data.pkl`` of a zip
checkpoint, or the five pickles ahead of the raw storages of a legacy (pre-1.6) one. The result
is an in-memory copy (the file's size in RAM).
"""

from __future__ import annotations

import io
import pickletools
import struct
import zipfile
from pathlib import Path

from dinoeval.errors import DinoevalError

_PASS = {  # protocol <= 2 opcodes copied as they are
    "MARK", "STOP", "POP", "POP_MARK", "DUP", "FLOAT", "INT", "BININT", "BININT1", "LONG",
    "BININT2", "NONE", "PERSID", "BINPERSID", "REDUCE", "STRING", "BINSTRING",
    "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "APPEND", "BUILD", "GLOBAL", "DICT",
    "EMPTY_DICT", "APPENDS", "GET", "BINGET", "INST", "LONG_BINGET", "LIST", "EMPTY_LIST",
    "OBJ", "PUT", "SETITEM", "TUPLE", "EMPTY_TUPLE", "SETITEMS",
    "BINFLOAT", "TUPLE1", "TUPLE2", "TUPLE3", "NEWTRUE", "NEWFALSE", "LONG1", "LONG4",
    "NEWOBJ", "EXT1", "EXT2", "EXT4", "EMPTY_SET",
}
_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}


class PickleDowngradeError(DinoevalError):
    """The pickle uses an opcode that cannot be rewritten for the weights-only loader."""


def _unicode(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def _put(index: int) -> bytes:
    return b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)


def _bytes(value: bytes) -> bytes:
    """``_codecs.encode(value.decode("latin1"), "latin1")``, protocol 2's bytes."""
    return (b"c_codecs\nencode\n" + _unicode(value.decode("latin-1")) + _unicode("latin1")
            + b"\x86R")  # TUPLE2, REDUCE


class _Rewriter:
    """One pickle, rewritten as it is read (see the module docstring)."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.put_at: dict[int, int] = {}  # position in out -> memo index it stores
        self.memo: set[int] = set()
        self.memo_strings: dict[int, str] = {}
        self.dropped: set[int] = set()
        # consecutive string pushes a STACK_GLOBAL may consume: (position in out, value, memo
        # index when read by a BINGET)
        self.recent: list[tuple[int, str, int | None]] = []

    def _flush(self) -> None:
        """The pending strings are values: none may be a memo entry removed with a global."""
        if any(got is not None and got in self.dropped for _, _, got in self.recent):
            raise PickleDowngradeError("a module or class name is also used as a value")
        self.recent.clear()

    def _memoize(self, index: int) -> None:
        self.memo.add(index)
        if self.recent and self.recent[-1][0] == len(self.out) - 1:
            self.memo_strings[index] = self.recent[-1][1]
        self.put_at[len(self.out)] = index
        self.out.append(_put(index))

    def _stack_global(self) -> None:
        if len(self.recent) < 2:
            raise PickleDowngradeError("STACK_GLOBAL without a module and a name before it")
        (start, module, _), (_, name, _) = self.recent[-2:]
        for pos in range(start, len(self.out)):  # the two pushes and their memo entries go
            if pos in self.put_at:
                self.dropped.add(self.put_at.pop(pos))
        del self.out[start:]
        del self.recent[-2:]
        self._flush()
        self.out.append(f"c{module}\n{name}\n".encode())

    def op(self, name: str, arg: object, raw: bytes) -> None:
        if name == "FRAME":
            return
        if name in ("MEMOIZE", "BINPUT", "LONG_BINPUT"):
            self._memoize(len(self.memo) if name == "MEMOIZE" else int(arg))  # type: ignore[arg-type]
        elif name in _STRINGS:
            self.recent.append((len(self.out), str(arg), None))
            self.out.append(_unicode(str(arg)))
        elif name in ("BINGET", "LONG_BINGET") and arg in self.memo_strings:
            self.recent.append((len(self.out), self.memo_strings[arg], arg))  # type: ignore[index]
            self.out.append(raw)
        elif name == "STACK_GLOBAL":
            self._stack_global()
        else:
            self._flush()
            if name == "PROTO":
                self.out.append(b"\x80\x02")
            elif name in ("SHORT_BINBYTES", "BINBYTES", "BINBYTES8"):
                self.out.append(_bytes(arg))  # type: ignore[arg-type]
            elif name in _PASS:
                self.out.append(raw)
            else:
                raise PickleDowngradeError(f"opcode {name}")


def downgrade_pickle(stream: io.BufferedIOBase | io.BytesIO) -> bytes:
    """Read one pickle from ``stream`` (left just after its ``STOP``) and return it in
    protocol-2 opcodes (see the module docstring).

    Raises:
        PickleDowngradeError: an opcode that cannot be rewritten.
    """
    start = stream.tell()
    data_ops = list(pickletools.genops(stream))
    end = stream.tell()
    stream.seek(start)
    blob = stream.read(end - start)
    rw = _Rewriter()
    for i, (opcode, arg, pos) in enumerate(data_ops):
        nxt = data_ops[i + 1][2] if i + 1 < len(data_ops) else end
        rw.op(opcode.name, arg, blob[pos - start:nxt - start])
    return b"".join(rw.out)


def pickle_protocol(path: Path) -> int | None:
    """The protocol of a ``torch.save`` file's (first) pickle, ``None`` when unreadable."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
                with zf.open(name) as f:
                    head = f.read(2)
        else:
            with path.open("rb") as f:
                head = f.read(2)
    except (OSError, StopIteration, zipfile.BadZipFile):
        return None
    return head[1] if len(head) == 2 and head[0] == 0x80 else None


def downgrade_checkpoint(path: Path) -> io.BytesIO:
    """An in-memory copy of the ``torch.save`` file ``path`` whose pickles use protocol-2
    opcodes only (zip: ``data.pkl`` rewritten, other entries copied; legacy: the five leading
    pickles rewritten, the raw storages copied).

    Raises:
        PickleDowngradeError: an opcode that cannot be rewritten.
    """
    buf = io.BytesIO()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as dst:
            for info in src.infolist():
                data = src.read(info)
                if info.filename.endswith("data.pkl"):
                    data = downgrade_pickle(io.BytesIO(data))
                dst.writestr(info.filename, data)
    else:
        with path.open("rb") as f:
            for _ in range(5):  # magic number, protocol, sys info, the object, storage keys
                buf.write(downgrade_pickle(f))
            while block := f.read(1 << 24):
                buf.write(block)
    buf.seek(0)
    return buf
