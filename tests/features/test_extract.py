import json

import numpy as np
import pytest
import torch
from PIL import Image

from dinoeval.data import get_source
from dinoeval.errors import DinoevalError
from dinoeval.features import EvalTransform, FeatureCache, extract_features
from dinoeval.models import load_backbone
from tests.conftest import make_source


@pytest.fixture
def backbone(tiny_vit, tmp_path):
    p = tmp_path / "tiny.pth"
    torch.save(tiny_vit.state_dict(), p)
    return load_backbone(str(p))


def test_feature_kinds_shapes_and_orders(backbone, tiny_source):
    d = 192
    feats = {k: extract_features(backbone, tiny_source, kind=k, batch_size=16).features
             for k in ("cls", "cls-last4", "cls+avgpool", "cls+avgpool-v2", "patch")}
    assert feats["cls"].shape == (40, d)
    # depth 2 < 4: all blocks are used, still one CLS per block
    assert feats["cls-last4"].shape == (40, 2 * d)
    np.testing.assert_allclose(feats["cls-last4"][:, -d:], feats["cls"], rtol=1e-5, atol=1e-5)
    assert feats["patch"].shape == (40, 16, d)
    avg = feats["patch"].mean(1)
    v1 = feats["cls+avgpool"]
    np.testing.assert_allclose(v1[:, 0::2], feats["cls"], rtol=1e-5, atol=1e-5)  # interleaved
    np.testing.assert_allclose(v1[:, 1::2], avg, rtol=1e-4, atol=1e-5)
    v2 = feats["cls+avgpool-v2"]
    np.testing.assert_allclose(v2[:, :d], feats["cls"], rtol=1e-5, atol=1e-5)  # concatenated
    np.testing.assert_allclose(v2[:, d:], avg, rtol=1e-4, atol=1e-5)


def test_cls_matches_timm_forward_and_batching_does_not_matter(backbone, tiny_source):
    a = extract_features(backbone, tiny_source, batch_size=7).features
    b = extract_features(backbone, tiny_source, batch_size=40).features
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    x = EvalTransform(size=(16, 16), crop_ratio=1.0)(tiny_source.images[:3])
    with torch.no_grad():
        ref = backbone.model.forward_features(x)[:, 0].numpy()
    np.testing.assert_allclose(a[:3], ref, rtol=1e-5, atol=1e-5)


def test_imagenet_transform_resizes_then_center_crops():
    img = np.zeros((1, 300, 400, 3), dtype=np.uint8)
    img[:, 150, 200] = 255  # the center pixel survives the center crop
    x = EvalTransform(size=(224, 224))(img)
    assert x.shape == (1, 3, 224, 224)
    raw = x * torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1) + torch.tensor(
        (0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    peak = np.unravel_index(raw[0, 0].argmax().item(), (224, 224))
    assert abs(peak[0] - 112) <= 1 and abs(peak[1] - 112) <= 1


def test_cache_hit_miss_and_staleness(backbone, tmp_path):
    src = make_source(n=12)
    cache = tmp_path / "cache"
    first = extract_features(backbone, src, cache_dir=str(cache))
    assert not first.meta.get("cached")
    second = extract_features(backbone, src, cache_dir=str(cache))
    assert second.meta.get("cached") and isinstance(second.features, np.memmap)
    np.testing.assert_array_equal(first.features, second.features)
    # Other data, kind or weights: a miss.
    other = make_source(n=12, seed=5)
    assert not extract_features(backbone, other, cache_dir=str(cache)).meta.get("cached")
    assert not extract_features(backbone, src, kind="cls-last4",
                                cache_dir=str(cache)).meta.get("cached")
    # A partial entry (no meta.json, as after a crash) and a stale one are never read.
    entry = FeatureCache(cache).path(first.meta)
    (entry / "meta.json").unlink()
    assert not extract_features(backbone, src, cache_dir=str(cache)).meta.get("cached")
    meta = json.loads((entry / "meta.json").read_text())
    meta["key"]["source_fingerprint"] = "deadbeef"
    (entry / "meta.json").write_text(json.dumps(meta))
    assert not extract_features(backbone, src, cache_dir=str(cache)).meta.get("cached")


def _write_folder(root, bad: bool = False):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            arr = rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    Image.fromarray(np.zeros((20, 20), np.uint8), mode="L").save(root / "dog" / "gray.jpg")
    if bad:
        (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")


def test_imagefolder_source_order_classes_and_grayscale(tmp_path, backbone):
    _write_folder(tmp_path / "train")
    src = get_source(f"imagefolder:{tmp_path / 'train'}")
    assert src.classes == ("cat", "dog") and src.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert src.load(6).shape == (20, 20, 3)  # grayscale converted to RGB
    fs = extract_features(backbone, src, batch_size=3)
    assert fs.features.shape == (7, 192)


def test_corrupt_image_names_the_file_or_is_skipped_and_counted(tmp_path, backbone):
    _write_folder(tmp_path / "train", bad=True)
    src = get_source(f"imagefolder:{tmp_path / 'train'}")
    with pytest.raises(DinoevalError, match=r"broken\.jpg.*--skip-bad-images"):
        extract_features(backbone, src)
    fs = extract_features(backbone, src, skip_bad_images=True)
    assert fs.meta["skipped"] == 1 and len(fs) == 7
    assert src.paths[int(np.setdiff1d(np.arange(8), fs.indices)[0])].name == "broken.jpg"


def test_bad_specs_give_clear_errors(tmp_path):
    with pytest.raises(DinoevalError, match="unknown data source"):
        get_source("cifar:train")
    with pytest.raises(DinoevalError, match="does not exist"):
        get_source(f"imagefolder:{tmp_path / 'nope'}")
    with pytest.raises(DinoevalError, match="apt-get install dataset-fashion-mnist"):
        get_source(f"fashion-mnist:train@{tmp_path}")
    with pytest.raises(DinoevalError, match="split"):
        get_source("digits:valid")


def test_subset_spec_is_seeded_and_ordered():
    a = get_source("digits[:100]")
    b = get_source("digits[:100]")
    assert len(a) == 100 and a.fingerprint() == b.fingerprint()
    assert get_source("digits:train").fingerprint() != get_source("digits:test").fingerprint()


def test_pixels_are_the_raw_image_with_one_channel_for_grayscale_sources():
    # Published pixel baselines (Fashion-MNIST: 784 dims) use the single channel; repeating it to
    # RGB would triple memory and time for the same cosine k-NN.
    pixels = load_backbone("pixels")
    gray = make_source(n=6, size=8, rgb=False, spec="gray")
    rgb = make_source(n=6, size=8, rgb=True, spec="rgb")
    g = extract_features(pixels, gray, batch_size=4).features
    np.testing.assert_allclose(g, gray.images.reshape(6, 64) / 255.0, rtol=0, atol=1e-7)
    c = extract_features(pixels, rgb, batch_size=4).features
    expected = rgb.images.transpose(0, 3, 1, 2).reshape(6, 3 * 64) / 255.0  # CHW order
    np.testing.assert_allclose(c, expected, rtol=0, atol=1e-7)
