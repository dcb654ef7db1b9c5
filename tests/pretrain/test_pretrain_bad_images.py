"""pretrain --skip-bad-images (the error hint named it, pretrain lacked it) and option messages."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dinoeval.data import BadImageError
from dinoeval.errors import DinoevalError
from pretrain.config import PretrainConfig
from pretrain.loop import train_loop


def _folder(root):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")
    (root / "a" / "5.png").write_bytes(b"\x89PNG cut short")
    return f"imagefolder:{root}"


def test_skip_bad_images_trains_without_the_broken_file(tmp_path, tiny_config):
    data = _folder(tmp_path / "imgs")
    cfg = tiny_config(data=data, epochs=1, epoch_images=16, batch_size=8, knn_every=0)
    with pytest.raises(BadImageError, match=r"5\.png.*--skip-bad-images"):
        train_loop(cfg, tmp_path / "stop")
    result = train_loop(tiny_config(data=data, epochs=1, epoch_images=16, batch_size=8,
                                    knn_every=0, skip_bad_images=True), tmp_path / "run")
    assert result.step == 2 and result.stop_reason == "done"


def test_cli_has_skip_bad_images_and_resume_help_names_threads():
    from typer.testing import CliRunner

    from dinoeval.cli import app

    text = " ".join(CliRunner().invoke(app, ["pretrain", "--help"],
                                       env={"COLUMNS": "200"}).output.split())
    text = text.replace("- ", "-")  # help is wrapped at 80 columns: re-join hyphenated breaks
    assert "--skip-bad-images" in text
    assert "bit-identical to an uninterrupted run only with the same --threads" in text


def test_num_heads_message_names_the_option_only_when_given():
    with pytest.raises(DinoevalError, match=r"^--num-heads 3 does not divide the width 32; "):
        PretrainConfig(arch="vit_tiny", embed_dim=32, num_heads=3).resolved((8, 8))
