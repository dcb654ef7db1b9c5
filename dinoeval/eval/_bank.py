"""The out-of-core k-NN bank's storage: dtype codec, block reader and streaming writer.

A bank is an ``(N, D)`` C-ordered ``.npy`` array (or a memory map, or an in-memory array) of
float32, float16, or bfloat16 kept as its uint16 bit pattern (``.npy`` has no bfloat16). This is
the one module of :mod:`dinoeval.eval` that reads and writes files: the bank's format is what the
out-of-core search (:mod:`dinoeval.eval.knn_ooc`) is about.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from dinoeval.errors import DinoevalError
from dinoeval.eval.knn import _prep

BANK_DTYPES = ("float32", "float16", "bfloat16")
_NORM_ROWS = 8192


def encode_bank(x: np.ndarray, dtype: str) -> np.ndarray:
    """``(N, D)`` float32 -> the stored array: float32, float16, or bfloat16 bits as uint16."""
    if dtype == "float32":
        return np.asarray(x, dtype=np.float32)
    if dtype == "float16":
        return np.asarray(x, dtype=np.float32).astype(np.float16)
    if dtype == "bfloat16":
        return _float32_to_bfloat16_bits(np.asarray(x, dtype=np.float32))
    raise DinoevalError(f"unknown bank dtype {dtype!r}; use one of {', '.join(BANK_DTYPES)}")


def decode_bank(block: np.ndarray) -> np.ndarray:
    """A stored block -> float32 (uint16 is read as bfloat16 bits)."""
    if block.dtype == np.uint16:  # bfloat16 is the top half of a float32: exact
        return (np.asarray(block).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(block, dtype=np.float32)


def _float32_to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even as torch rounds.

    Pure numpy, so read-only inputs (memory maps) need no copy and raise no torch warning. NaN
    stays a (quiet) NaN.
    """
    bits = x.view(np.uint32) if x.flags.c_contiguous else np.ascontiguousarray(x).view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))) >> 16
    out = rounded.astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return out


def bank_dtype_of(dtype: np.dtype) -> str:
    """The storage name of an array dtype (uint16 means bfloat16 bits)."""
    names = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16",
             np.dtype(np.uint16): "bfloat16"}
    if np.dtype(dtype) not in names:
        raise DinoevalError(f"a k-NN bank must be float32, float16 or bfloat16 (uint16), got {dtype}")
    return names[np.dtype(dtype)]


def write_bank(bank: str | Path | np.ndarray, out: str | Path, dtype: str, *,
               normalize: bool = True, block_rows: int = 65536) -> Path:
    """Stream ``bank`` into ``out`` (``.npy``) in ``dtype``, L2-normalised first by default.

    Written block by block (so it works for banks larger than memory) with
    :func:`dinoeval._io.atomic_write`: a temporary file renamed into place, the umask's mode, and
    a one-line :class:`~dinoeval._io.DiskFullError` naming ``out`` on a full disk.
    """
    from dinoeval._io import atomic_write

    reader = BankReader(bank)
    enc = encode_bank(np.zeros((1, reader.dim), np.float32), dtype).dtype

    def write(tmp: str) -> None:
        # plain writes, not a writable memmap: dirty mapped pages would count in this process's RSS
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(enc),
                                                     "fortran_order": False,
                                                     "shape": (len(reader), reader.dim)})
            for _, block in reader.blocks(block_rows, normalize=normalize):
                f.write(np.ascontiguousarray(encode_bank(block, dtype)).tobytes())

    return atomic_write(out, write)


class BankReader:
    """Rows of an ``(N, D)`` bank, a block at a time.

    A path to an ``.npy`` file, or a memory-mapped array (what ``FeatureCache`` returns), is
    re-mapped for each block and unmapped afterwards, so pages read earlier do not stay resident.
    An in-memory array is sliced.
    """

    def __init__(self, bank: str | Path | np.ndarray) -> None:
        self.path: Path | None = None
        self.array: np.ndarray | None = None
        if isinstance(bank, np.memmap) and getattr(bank, "filename", None) and bank.ndim == 2 \
                and bank.flags.c_contiguous:
            self.path, self.offset = Path(bank.filename), int(bank.offset)
            self.shape, self.dtype = tuple(bank.shape), bank.dtype
        elif isinstance(bank, str | Path):
            self.path = Path(bank)
            if not self.path.exists():
                raise DinoevalError(f"bank file {self.path} not found; pass a features.npy path")
            try:
                with open(self.path, "rb") as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read(f)
                    self.offset = f.tell()
            except ValueError as err:
                raise DinoevalError(f"bank file {self.path} is not a .npy array ({err}); "
                                    "extract the features again") from None
            if fortran or len(shape) != 2:
                raise DinoevalError(f"{self.path}: a bank must be a C-ordered (N, D) array, got "
                                    f"shape {shape}")
            self.shape, self.dtype = tuple(shape), np.dtype(dtype)
            need = self.offset + int(np.prod(self.shape)) * self.dtype.itemsize
            have = self.path.stat().st_size
            if have < need:
                raise DinoevalError(f"bank file {self.path} is truncated ({have:,} of {need:,} "
                                    "bytes); extract the features again")
        else:
            self.array = np.asarray(bank)
            if self.array.ndim != 2:
                raise DinoevalError(f"k-NN needs 2-D features, got a bank of shape "
                                    f"{self.array.shape} (use a cls* feature kind, not patch)")
            self.shape, self.dtype = tuple(self.array.shape), self.array.dtype
        self.storage = bank_dtype_of(self.dtype)

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def dim(self) -> int:
        return int(self.shape[1])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as they are stored (a fresh copy)."""
        if self.array is not None:
            return np.array(self.array[start:stop])
        assert self.path is not None
        mm = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(stop - start, self.dim),
                       offset=self.offset + start * self.dim * self.dtype.itemsize)
        out = np.array(mm)
        del mm  # unmap now, so the block's pages leave this process's RSS
        return out

    def blocks(self, rows: int, *, start: int = 0, stop: int | None = None,
               normalize: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, (b, D) float32 block)`` for rows ``[start, stop)``, ``rows`` at a time."""
        stop = len(self) if stop is None else stop
        for s in range(start, stop, rows):
            block = self.read(s, min(s + rows, stop))
            if block.dtype != np.float32:
                block = decode_bank(block)
            if normalize:
                # in place, a slice at a time: no full-size temporaries; row for row the same
                # arithmetic as knn_classify's normalisation
                for r in range(0, len(block), _NORM_ROWS):
                    block[r : r + _NORM_ROWS] = _prep(block[r : r + _NORM_ROWS], True)
            yield s, block
            del block  # before the next read, or two blocks would be alive at once
