"""Data-level facts: classes matched by name, flat folders, image sizes, subsets, overlap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dinoeval.data import (
    ArraySource,
    ImageFolderSource,
    check_disjoint,
    check_train_val,
    get_source,
    match_classes,
    require_labels,
)
from dinoeval.errors import DinoevalError

COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "fox": (0, 0, 255), "owl": (255, 255, 0)}


def write_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (12, 12),
                 nested: bool = False) -> Path:
    """``root/<class>/<i>.png`` solid-colour images (``counts[c] == 0``: an empty folder)."""
    for c, n in counts.items():
        d = root / c / ("deep" if nested else "")
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (size[1] + i % 2 * (not nested), size[0]), COLOURS[c]).save(
                d / f"{i}.png")
    return root


def test_val_missing_a_class_is_mapped_onto_the_train_classes_by_name(tmp_path):
    train = ImageFolderSource(write_folder(tmp_path / "train", {"cat": 2, "dog": 2, "fox": 2}))
    val = ImageFolderSource(write_folder(tmp_path / "val", {"cat": 2, "fox": 2}))
    assert val.labels.tolist() == [0, 0, 1, 1]  # the folder's own numbering: fox is 1
    got = check_train_val(train, val, "k-NN")
    assert got.classes == ("cat", "dog", "fox")
    assert got.labels.tolist() == [0, 0, 2, 2]  # fox is train's class 2
    assert [got.classes[y] for y in got.labels] == ["cat", "cat", "fox", "fox"]
    assert len(got) == 4 and got.load(0).shape == (12, 12, 3)
    assert got.fingerprint() != val.fingerprint()  # cached features carry labels


def test_extra_val_class_is_a_named_error(tmp_path):
    train = ImageFolderSource(write_folder(tmp_path / "train", {"cat": 1, "dog": 1}))
    val = ImageFolderSource(write_folder(tmp_path / "val", {"cat": 1, "fox": 1, "owl": 1}))
    with pytest.raises(DinoevalError, match=r"classes fox, owl of --val imagefolder:.*val are not "
                                            r"among the classes of --train imagefolder:.*train "
                                            r"\(cat, dog\)"):
        check_train_val(train, val, "k-NN")


def test_same_classes_in_another_order_are_renumbered():
    img = np.zeros((4, 8, 8), np.uint8)
    train = ArraySource(img, np.array([0, 1, 2, 0]), spec="a", name="a", split="train",
                        classes=("cat", "dog", "fox"))
    val = ArraySource(img + 1, np.array([0, 1, 2, 2]), spec="b", name="b", split="test",
                      classes=("fox", "cat", "dog"))
    got = match_classes(train, val)
    assert got.labels.tolist() == [2, 0, 1, 1] and got.classes == train.classes
    same = ArraySource(img + 2, np.array([0, 1, 2, 2]), spec="c", name="c", split="test",
                       classes=("cat", "dog", "fox"))
    assert match_classes(train, same) is same


def test_empty_class_folders(tmp_path):
    # an empty val folder of a class train lacks holds no image: nothing to match
    train = ImageFolderSource(write_folder(tmp_path / "train", {"cat": 1, "dog": 1}))
    val = ImageFolderSource(write_folder(tmp_path / "val", {"cat": 1, "owl": 0}))
    assert val.classes == ("cat", "owl") and check_train_val(train, val, "k-NN").labels.tolist() == [0]
    # an empty train folder of a class val has: no train sample, named before any work
    train2 = ImageFolderSource(write_folder(tmp_path / "train2", {"cat": 1, "fox": 0}))
    val2 = ImageFolderSource(write_folder(tmp_path / "val2", {"cat": 1, "fox": 2}))
    with pytest.raises(DinoevalError, match=r"--val class fox has no images in --train"):
        check_train_val(train2, val2, "a linear probe")


def test_nested_folders_belong_to_their_top_level_class(tmp_path):
    root = write_folder(tmp_path / "train", {"cat": 2, "dog": 1}, nested=True)
    (root / "cat" / ".hidden").mkdir()
    Image.new("RGB", (12, 12)).save(root / "cat" / ".hidden" / "x.png")  # ignored
    Image.new("RGB", (12, 12)).save(root / "dog" / ".skip.png")  # ignored
    src = ImageFolderSource(root)
    assert src.classes == ("cat", "dog") and src.labels.tolist() == [0, 0, 1]
    assert all(p.parent.name == "deep" for p in src.paths)


def test_flat_folder_is_unlabelled_in_a_stable_order(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("b.png", "a.jpg", "c.png"):
        Image.new("RGB", (10, 7)).save(root / name)
    (root / "notes.txt").write_text("not an image")
    src = get_source(f"imagefolder:{root}")
    assert [p.name for p in src.paths] == ["a.jpg", "b.png", "c.png"]
    assert src.labels.tolist() == [-1, -1, -1] and src.classes == ()
    assert src.native_size == (7, 10)
    assert src.fingerprint() == get_source(f"imagefolder:{root}").fingerprint()
    with pytest.raises(DinoevalError, match=r"^needs labels: k-NN .* folder of unlabelled images"):
        require_labels(src, "k-NN")
    labelled = ImageFolderSource(write_folder(tmp_path / "train", {"cat": 1}))
    with pytest.raises(DinoevalError, match=r"^needs labels"):
        check_train_val(labelled, src, "k-NN")


def test_class_folders_beside_loose_images_are_refused(tmp_path):
    root = write_folder(tmp_path / "mixed", {"cat": 1})
    Image.new("RGB", (4, 4)).save(root / "stray.png")
    with pytest.raises(DinoevalError, match=r"both class sub-folders \(cat\) and 1 images"):
        ImageFolderSource(root)


def test_folder_records_its_image_size(tmp_path):
    same = ImageFolderSource(write_folder(tmp_path / "same", {"cat": 2, "dog": 1}, nested=True))
    assert same.native_size == (12, 12)
    mixed = ImageFolderSource(write_folder(tmp_path / "mixed", {"cat": 2}))  # 12 and 13 wide
    assert mixed.native_size is None
    assert get_source(f"imagefolder:{tmp_path / 'same'}[:2]").native_size == (12, 12)


def test_subset_larger_than_the_split_is_refused_with_its_size():
    with pytest.raises(DinoevalError, match=r"digits:test\[:500\]: asks for 500 images but "
                                            r"digits:test has only 445; use \[:445\] or fewer"):
        get_source("digits:test[:500]")
    assert len(get_source("digits:test[:445]")) == 445
    assert len(get_source("digits:test[:100]")) == 100


@pytest.mark.parametrize(("train", "val", "shared"), [
    ("digits", "digits", 1797),
    ("digits[:1000]", "digits[:500]", 500),  # nested seeded subsets of one split
    ("digits:all", "digits:test", 445),
    ("digits:train[:600]", "digits:train[:300]", 300),
    ("shapes:train@n=64,size=16", "shapes:train@n=32,size=16", 32),
])
def test_train_val_overlap_is_refused(train, val, shared):
    with pytest.raises(DinoevalError, match=rf"overlaps --train .*: {shared:,} of its"):
        check_disjoint(get_source(train), get_source(val))


@pytest.mark.parametrize(("train", "val"), [
    ("digits:train", "digits:test"),
    ("digits:train[:300]", "digits:test[:100]"),
    ("shapes:train@n=32,size=16", "shapes:test@n=32,size=16"),
    ("shapes:train@n=32,size=16,seed=1", "shapes:train@n=32,size=16,seed=2"),
])
def test_disjoint_splits_pass(train, val):
    check_disjoint(get_source(train), get_source(val))
