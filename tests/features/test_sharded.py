import itertools
import json

import numpy as np
import pytest
import torch

from dinoeval.errors import DinoevalError
from dinoeval.features import FeatureCache, extract_features, feature_meta, make_transform
from dinoeval.features.sharded import (
    extract_sharded,
    merge_shards,
    missing_shards,
    shard_bounds,
    shards_dir,
)
from dinoeval.models import load_backbone
from tests.conftest import make_source


@pytest.fixture
def backbone(tiny_vit, tmp_path):
    p = tmp_path / "tiny.pth"
    torch.save(tiny_vit.state_dict(), p)
    return load_backbone(str(p))


@pytest.mark.parametrize("n,world,bs", [(40, 2, 8), (41, 3, 8), (5, 4, 2), (3, 4, 8), (100, 7, 1)])
def test_shard_bounds_tile_exactly_in_whole_batches(n, world, bs):
    bounds = [shard_bounds(n, r, world, bs) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (a0, a1), (b0, _) in itertools.pairwise(bounds):
        assert a1 == b0 and a0 <= a1
    assert all(s % bs == 0 for s, _ in bounds)
    sizes = [b - a for a, b in bounds]
    assert sum(sizes) == n  # no padded duplicates
    assert max(sizes) - min(sizes) <= bs


def test_shard_bounds_rejects_bad_rank():
    with pytest.raises(DinoevalError, match="rank 2"):
        shard_bounds(10, 2, 2, 4)


def test_shards_by_hand_merge_bit_identical_and_resume(backbone, tmp_path):
    src = make_source(n=37)
    ref = extract_features(backbone, src, batch_size=8).features
    cache = tmp_path / "cache"
    meta = feature_meta(backbone, src, "cls", make_transform(backbone, src), "fp32")
    calls = []
    # rank 1 of 3 "dies" before rank 2 runs: nothing looks complete
    assert extract_sharded(backbone, src, cache_dir=cache, rank=0, world_size=3, batch_size=8) is None
    assert extract_sharded(backbone, src, cache_dir=cache, rank=2, world_size=3, batch_size=8) is None
    assert FeatureCache(cache).get(meta) is None
    assert missing_shards(cache, meta, 3) == [1]
    with pytest.raises(DinoevalError, match="1 of 3 shards missing"):
        merge_shards(cache, meta, 3)
    # a leftover temp dir from a crashed write is ignored
    (shards_dir(cache, meta) / ".tmp-crashed").mkdir()
    fs = extract_sharded(backbone, src, cache_dir=cache, rank=1, world_size=3, batch_size=8,
                         progress=calls.append)
    assert fs is not None and calls[-1] == shard_bounds(37, 1, 3, 8)[1] - shard_bounds(37, 1, 3, 8)[0]
    assert np.array_equal(np.asarray(fs.features), ref)  # bit-identical
    assert np.array_equal(fs.indices, np.arange(37)) and np.array_equal(fs.labels, src.labels)
    assert not shards_dir(cache, meta).exists()
    stored = json.loads((FeatureCache(cache).path(meta) / "meta.json").read_text())
    assert stored["sharded"] == {"world_size": 3, "batch_size": 8} and stored["complete"]
    # the normal cache path reads the merged entry
    again = extract_features(backbone, src, batch_size=8, cache_dir=str(cache))
    assert again.meta.get("cached") and np.array_equal(np.asarray(again.features), ref)


def test_rerun_extracts_only_missing_shard(backbone, tmp_path, monkeypatch):
    src = make_source(n=20)
    cache = tmp_path / "c"
    extract_sharded(backbone, src, cache_dir=cache, rank=0, world_size=2, batch_size=4)
    import dinoeval.features.sharded as sh

    seen = []
    real = sh.forward_features

    def counting(bb, x, kind, **kw):
        seen.append(len(x))
        return real(bb, x, kind, **kw)

    monkeypatch.setattr(sh, "forward_features", counting)
    assert extract_sharded(backbone, src, cache_dir=cache, rank=0, world_size=2, batch_size=4) is None
    assert seen == []  # shard 0 reused
    fs = extract_sharded(backbone, src, cache_dir=cache, rank=1, world_size=2, batch_size=4)
    lo, hi = shard_bounds(20, 1, 2, 4)
    assert sum(seen) == hi - lo == 12 and fs is not None and len(fs) == 20


def test_more_ranks_than_batches_gives_empty_shards(backbone, tmp_path):
    src = make_source(n=5)
    ref = extract_features(backbone, src, batch_size=4).features
    out = [extract_sharded(backbone, src, cache_dir=tmp_path, rank=r, world_size=4, batch_size=4)
           for r in range(4)]
    assert out[:3] == [None] * 3
    assert np.array_equal(np.asarray(out[3].features), ref)


@pytest.mark.gpu
def test_cuda_bf16_shards_match_single_process(backbone, tmp_path):
    src = make_source(n=64)
    ref = extract_features(backbone, src, batch_size=16, device="cuda", precision="bf16").features
    for r in range(2):
        fs = extract_sharded(backbone, src, cache_dir=tmp_path, rank=r, world_size=2,
                             batch_size=16, device="cuda", precision="bf16")
    np.testing.assert_allclose(np.asarray(fs.features), ref, rtol=1e-2, atol=1e-2)
