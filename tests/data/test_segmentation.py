"""Masked image sources for the dense evaluations: shapes and the VOC folder layout."""

import numpy as np
import pytest
from PIL import Image

from dinoeval.data.segmentation import get_segmentation_source
from dinoeval.data.video import davis_palette, write_palette_png
from dinoeval.errors import DinoevalError


def test_shapes_masks_are_class_indices():
    src = get_segmentation_source("shapes:train@n=6,size=32,classes=3")
    assert src.class_names == ("background", "circle", "triangle", "square")
    assert src.native_size == (32, 32) and src.size == 6
    for i in range(6):
        m = src.mask(i)
        assert set(np.unique(m)) == {0, 1 + i % 3}


def _voc(root, ids=("a", "b"), split="train"):
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids))
    (root / "JPEGImages").mkdir()
    for n, i in enumerate(ids):
        Image.fromarray(np.full((20, 30, 3), 40 * n, np.uint8)).save(root / "JPEGImages" / f"{i}.jpg")
        lab = np.zeros((20, 30), np.uint8)
        lab[5:15, 5:15] = 15
        lab[0, :] = 255
        write_palette_png(root / "SegmentationClass" / f"{i}.png", lab, davis_palette())
    return root


def test_vocfolder_reads_palette_masks(tmp_path):
    src = get_segmentation_source(f"vocfolder:{_voc(tmp_path / 'voc')}")
    assert src.size == 2 and src.num_classes == 21 and src.class_names[15] == "person"
    assert src.load(1).shape == (20, 30, 3)
    m = src.mask(0)
    assert m[7, 7] == 15 and m[0, 0] == 255 and m[19, 29] == 0


def test_vocfolder_errors(tmp_path):
    with pytest.raises(DinoevalError, match="no id list"):
        get_segmentation_source(f"vocfolder:{tmp_path}")
    root = _voc(tmp_path / "v")
    (root / "SegmentationClass" / "b.png").unlink()
    with pytest.raises(DinoevalError, match="1 listed masks missing"):
        get_segmentation_source(f"vocfolder:{root}")
    with pytest.raises(DinoevalError, match="bad option"):
        get_segmentation_source(f"vocfolder:{root}@fold=1")
    with pytest.raises(DinoevalError, match="needs a source with masks"):
        get_segmentation_source("digits")
