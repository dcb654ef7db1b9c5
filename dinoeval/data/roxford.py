"""The revisited Oxford and Paris benchmarks (``roxford5k``, ``rparis6k``) read from their layout.

Layout (Radenović et al., CVPR 2018; the files DINO's ``eval_image_retrieval.py`` reads)::

    <root>/<name>/jpg/<image>.jpg
    <root>/<name>/gnd_<name>.pkl   # {"imlist": [...], "qimlist": [...], "gnd": [per query]}

where each ``gnd`` entry holds ``easy``, ``hard`` and ``junk`` (indices into ``imlist``) and
``bbx`` (the query's box ``[x1, y1, x2, y2]`` in pixels). The ground truth is read with a
restricted unpickler that admits only builtin containers and numpy arrays: a file that asks for
any other global (a function call hidden in a pickle) is refused before anything runs, like an
unsafe checkpoint.

Sources (``get_source``): ``roxford5k:query@DIR``, ``roxford5k:query-full@DIR``,
``roxford5k:database@DIR`` (and the same for ``rparis6k``), ``DIR`` being the dataset folder or
its parent. Queries are cropped to their box as the revisited protocol prescribes
(``example_process_images.py``: PIL's ``crop(bbx)``); ``query-full`` keeps the whole image, as
DINO's retrieval script does.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dinoeval.data._base import ImageSource
from dinoeval.data.builtin import read_rgb
from dinoeval.errors import DinoevalError

REVISITED_NAMES = ("roxford5k", "rparis6k")
SPLITS = ("query", "query-full", "database")

# module -> names a ground-truth pickle may ask for: numpy arrays, dtypes and scalars
_ALLOWED = {
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
}


class UnsafeGroundTruthError(DinoevalError):
    """A ground-truth pickle that asks for code to be run."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise UnsafeGroundTruthError(f"GLOBAL {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeGroundTruthError("a persistent id")


def safe_load_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` admitting only builtin containers/scalars and numpy arrays.

    Raises:
        UnsafeGroundTruthError: the file references any other global (nothing is called).
        DinoevalError: missing, empty or corrupt file.
    """
    path = Path(path)
    if not path.is_file():
        raise DinoevalError(f"ground-truth file {path} not found")
    data = path.read_bytes()
    if not data:
        raise DinoevalError(f"ground-truth file {path} is empty; copy it again")
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafeGroundTruthError as err:
        raise UnsafeGroundTruthError(
            f"refusing to load {path}: it pickles {err}, which could run code; a revisited "
            "ground-truth file holds only lists, dicts, strings and numpy arrays") from None
    except Exception as err:
        raise DinoevalError(f"ground-truth file {path} cannot be read as a pickle "
                            f"({type(err).__name__}: {err}); copy it again") from None


@dataclass(frozen=True)
class RevisitedGroundTruth:
    """A revisited benchmark's image lists and per-query ground truth.

    Attributes:
        name: ``roxford5k`` or ``rparis6k`` (any ``gnd_<name>.pkl`` works).
        folder: the dataset folder (holding ``jpg/``).
        imlist: database image names (no extension), in index order.
        qimlist: query image names.
        easy, hard, junk: per query, ``int64`` indices into ``imlist``.
        bbx: ``(Q, 4)`` float query boxes ``[x1, y1, x2, y2]`` (NaN row: no box).
    """

    name: str
    folder: Path
    imlist: tuple[str, ...]
    qimlist: tuple[str, ...]
    easy: tuple[np.ndarray, ...]
    hard: tuple[np.ndarray, ...]
    junk: tuple[np.ndarray, ...]
    bbx: np.ndarray

    def entries(self) -> list[dict[str, np.ndarray]]:
        """Per query ``{"easy", "hard", "junk"}`` (the shape the protocol helpers take)."""
        return [{"easy": e, "hard": h, "junk": j}
                for e, h, j in zip(self.easy, self.hard, self.junk, strict=True)]


def find_dataset_folder(directory: str | Path, name: str) -> Path:
    """``directory`` itself or ``directory/name``, whichever holds ``gnd_<name>.pkl``."""
    d = Path(directory)
    for cand in (d, d / name):
        if (cand / f"gnd_{name}.pkl").is_file():
            return cand
    raise DinoevalError(f"no gnd_{name}.pkl in {d} or {d / name}; point to the {name} folder "
                        "(holding jpg/ and the ground-truth pickle)")


def read_groundtruth(folder: str | Path, name: str) -> RevisitedGroundTruth:
    """Read and check ``folder/gnd_<name>.pkl`` (see the module docstring)."""
    folder = find_dataset_folder(folder, name)
    path = folder / f"gnd_{name}.pkl"
    cfg = safe_load_pickle(path)
    if not isinstance(cfg, dict) or not {"imlist", "qimlist", "gnd"} <= set(cfg):
        raise DinoevalError(f"{path} is not a revisited ground-truth file (needs a dict with "
                            "imlist, qimlist and gnd)")
    imlist = _names(cfg["imlist"], path, "imlist")
    qimlist = _names(cfg["qimlist"], path, "qimlist")
    gnd = cfg["gnd"]
    if not isinstance(gnd, list | tuple) or len(gnd) != len(qimlist):
        raise DinoevalError(f"{path}: gnd must list one entry per query ({len(qimlist)})")
    easy, hard, junk, boxes = [], [], [], []
    for i, g in enumerate(gnd):
        if not isinstance(g, dict):
            raise DinoevalError(f"{path}: gnd[{i}] is not a dict")
        for key, out in (("easy", easy), ("hard", hard), ("junk", junk)):
            out.append(_indices(g.get(key, []), len(imlist), path, f"gnd[{i}].{key}"))
        boxes.append(_box(g.get("bbx"), path, i))
    return RevisitedGroundTruth(name=name, folder=folder, imlist=imlist, qimlist=qimlist,
                                easy=tuple(easy), hard=tuple(hard), junk=tuple(junk),
                                bbx=np.array(boxes, np.float64).reshape(-1, 4))


def _names(value: Any, path: Path, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple | np.ndarray) or not all(
            isinstance(v, str | np.str_) for v in value):
        raise DinoevalError(f"{path}: {key} must be a list of image names")
    return tuple(str(v) for v in value)


def _indices(value: Any, n: int, path: Path, what: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
        if arr.size and not np.issubdtype(arr.dtype, np.number):
            raise ValueError
        arr = arr.astype(np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DinoevalError(f"{path}: {what} must be a list of image indices") from None
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise DinoevalError(f"{path}: {what} holds index {int(arr.max())} outside the "
                            f"{n}-image database")
    return arr


def _box(value: Any, path: Path, i: int) -> list[float]:
    if value is None:
        return [np.nan] * 4
    try:
        box = [float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError):
        box = []
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise DinoevalError(f"{path}: gnd[{i}].bbx must be [x1, y1, x2, y2] with x2 > x1, "
                            f"y2 > y1, got {value!r}")
    return box


def crop_box(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Crop ``(H, W, 3)`` to ``[x1, y1, x2, y2]`` as PIL's ``Image.crop`` does (coordinates rounded;
    clipped here to the image, where PIL would pad with black)."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    x1, x2 = max(0, min(x1, w - 1)), max(1, min(x2, w))
    y1, y2 = max(0, min(y1, h - 1)), max(1, min(y2, h))
    if x2 <= x1 or y2 <= y1:
        raise DinoevalError(f"query box {list(box)} lies outside the {w}x{h} image")
    return image[y1:y2, x1:x2]


class RevisitedSource(ImageSource):
    """Queries (cropped to their box, or full) or database images of a revisited benchmark.

    Labels are ``-1``: relevance comes from :attr:`groundtruth`, not from classes.
    """

    def __init__(self, gt: RevisitedGroundTruth, split: str) -> None:
        if split not in SPLITS:
            raise DinoevalError(f"{gt.name} split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.groundtruth = gt
        self.split = split
        names = gt.imlist if split == "database" else gt.qimlist
        self.paths = [gt.folder / "jpg" / f"{n}.jpg" for n in names]
        missing = [p for p in self.paths if not p.is_file()]
        if missing:
            raise DinoevalError(f"{gt.name}: {len(missing)} {split} images missing, e.g. "
                                f"{missing[0]}; copy the whole jpg/ folder")
        self.crop = split == "query"
        if self.crop and np.isnan(gt.bbx).any():
            raise DinoevalError(f"{gt.name}: some queries have no bbx; use {gt.name}:query-full")
        self.labels = np.full(len(names), -1, np.int64)
        self.name = gt.name
        self.spec = f"{gt.name}:{split}@{gt.folder}"

    def load(self, index: int) -> np.ndarray:
        img = read_rgb(self.paths[index])
        return crop_box(img, self.groundtruth.bbx[index]) if self.crop else img

    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        h.update(self.split.encode())
        gnd = self.groundtruth.folder / f"gnd_{self.groundtruth.name}.pkl"
        for p in [gnd, *self.paths]:
            st = p.stat()
            h.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def revisited_source(name: str, split: str | None, directory: str | None) -> RevisitedSource:
    """The ``roxford5k``/``rparis6k`` source factory (``NAME:SPLIT@DIR``)."""
    if not directory:
        raise DinoevalError(f"{name} needs its folder: {name}:query@/path/to/{name} (or "
                            f"{name}:database@...)")
    return RevisitedSource(read_groundtruth(directory, name), split or "database")


def _register() -> None:
    from dinoeval.data.registry import register_source

    for name in REVISITED_NAMES:
        register_source(name, lambda arg, d, _n=name: revisited_source(_n, arg, d),
                        f"{name}:query|query-full|database@DIR (revisited layout, gnd_{name}.pkl)")


_register()
