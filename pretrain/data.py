"""Training data: in-memory arrays or decoded files, seeded epoch order, rank shards, k-NN probe."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dinoeval.data import ImageSource
from dinoeval.errors import DinoevalError
from pretrain.config import PretrainConfig
from pretrain.distributed import DistEnv
from pretrain.monitor import KnnProbe

log = logging.getLogger(__name__)


@dataclass
class TrainData:
    """The training indices, the images when held in memory, and the k-NN probe.

    ``images``: ``(N, H, W[, 3])`` uint8 CPU tensor of the whole source, or ``None`` when images
    are decoded on the fly (then resized to ``load_size`` squares).
    """

    source: ImageSource
    images: torch.Tensor | None
    train_indices: np.ndarray
    probe: KnnProbe | None
    load_size: int

    def fetch(self, indices: np.ndarray) -> torch.Tensor:
        """uint8 images for source ``indices``."""
        if self.images is not None:
            return self.images[torch.from_numpy(np.asarray(indices, dtype=np.int64))]
        return torch.stack([load_resized(self.source, int(i), self.load_size) for i in indices])


def load_resized(source: ImageSource, index: int, size: int) -> torch.Tensor:
    """Decode image ``index``, resize its shorter side to ``size`` and center-crop a square:
    ``(size, size, 3)`` uint8 (the common size that batched augmentation needs)."""
    from PIL import Image

    img = Image.fromarray(source.load(index))
    w, h = img.size
    s = size / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return torch.from_numpy(np.asarray(img.crop((left, top, left + size, top + size))).copy())


def build_data(cfg: PretrainConfig, source: ImageSource) -> TrainData:
    """Hold out the k-NN queries (a seeded subset of the labelled images) from training; the
    memory bank is a seeded subset of the training images.

    With ``cfg.skip_bad_images`` every file of a source decoded on the fly is decoded once here
    and the unreadable ones are left out (``source.skipped`` counts them), so the epoch order is
    the same whatever the timing; otherwise the first unreadable file stops the run when met.
    """
    assert cfg.img_size
    arr = source.array()
    images = torch.from_numpy(np.array(arr, copy=True)) if arr is not None else None
    readable = np.arange(len(source))
    if images is None and cfg.skip_bad_images:
        readable = _readable(source)
    data = TrainData(source, images, readable, None, cfg.img_size * 8 // 7)
    labelled = readable[source.labels[readable] >= 0]
    if cfg.knn_every > 0 and len(np.unique(source.labels[labelled])) >= 2 and len(labelled) >= 20:
        perm = np.random.default_rng(cfg.seed).permutation(labelled)
        n_test = min(cfg.knn_test_size, len(labelled) // 5)
        test = np.sort(perm[:n_test])
        bank = np.sort(perm[n_test:n_test + cfg.knn_train_size])
        data.train_indices = np.setdiff1d(data.train_indices, test)
        data.probe = KnnProbe(data.fetch(bank), source.labels[bank], data.fetch(test),
                              source.labels[test])
    return data


def _readable(source: ImageSource) -> np.ndarray:
    """Indices of the images of ``source`` that decode; logs how many do not."""
    from dinoeval.data import BadImageError

    ok = []
    for i in range(len(source)):
        try:
            source.load(i)
        except BadImageError as err:
            log.warning("skipping %s", err)
            continue
        ok.append(i)
    source.skipped = len(source) - len(ok)
    if source.skipped:
        log.warning("skipped %d unreadable images of %s", source.skipped, source.spec)
    if not ok:
        raise DinoevalError(f"no image of {source.spec} can be read")
    return np.asarray(ok, dtype=np.int64)


def steps_per_epoch(cfg: PretrainConfig, data: TrainData, world_size: int = 1) -> int:
    if cfg.batch_size % world_size:
        raise DinoevalError(f"--batch-size {cfg.batch_size} (global) must be divisible by the "
                            f"{world_size} processes")
    n = min(cfg.epoch_images or len(data.train_indices), len(data.train_indices))
    steps = n // cfg.batch_size
    if steps < 1:
        raise DinoevalError(f"{cfg.data} has {len(data.train_indices)} training images, fewer than "
                            f"one batch of {cfg.batch_size}; lower --batch-size")
    return steps


def epoch_order(data: TrainData, seed: int, epoch: int) -> np.ndarray:
    """Source indices of an epoch, in order (a permutation seeded by ``(seed, epoch)``)."""
    perm = np.random.default_rng([seed, epoch]).permutation(len(data.train_indices))
    return data.train_indices[perm]


def iter_batches(cfg: PretrainConfig, data: TrainData, env: DistEnv, epoch: int,
                 start: int, steps: int) -> Iterator[torch.Tensor]:
    """This rank's uint8 batches of ``epoch`` from step ``start`` to ``steps`` (exclusive)."""
    order = epoch_order(data, cfg.seed, epoch)
    local = cfg.batch_size // env.world_size
    chunks = [order[s * cfg.batch_size:(s + 1) * cfg.batch_size][env.rank * local:
                                                                  (env.rank + 1) * local]
              for s in range(start, steps)]
    if data.images is not None or cfg.num_workers == 0:
        for idx in chunks:
            yield data.fetch(idx)
        return
    loader = torch.utils.data.DataLoader(
        _IndexDataset(data, np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)),
        batch_size=local, num_workers=cfg.num_workers, shuffle=False, drop_last=True,
        pin_memory=torch.cuda.is_available(), persistent_workers=False)
    yield from loader


class _IndexDataset(torch.utils.data.Dataset):
    def __init__(self, data: TrainData, indices: np.ndarray) -> None:
        self.data, self.indices = data, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> torch.Tensor:
        return load_resized(self.data.source, int(self.indices[i]), self.data.load_size)
