"""Non-square input sizes: ``--img-size 224x320`` on the command line, and features at a
non-square size equal to each family's reference forward.

References: DINO v1, a timm ``VisionTransformer`` built at the non-square size whose position
table is the official ``interpolate_pos_encoding`` result (bicubic, ``scale_factor=(g+0.1)/G``,
no anti-aliasing; written out below); DINOv2 without registers, ``transformers``' ``Dinov2Model``
with the official DINOv2 rule in its ``interpolate_pos_encoding`` (``transformers`` itself
resamples by size, which differs from the official model: the test shows it); DINOv2 with
registers and DINOv3, ``transformers``' own forward (its rule is the official one).
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from dinoeval.checks import parse_img_size
from dinoeval.cli import app
from dinoeval.errors import DinoevalError
from dinoeval.features import extract_features
from dinoeval.features.extract import make_transform
from dinoeval.models import load_backbone
from dinoeval.pipeline.setup import BackboneOptions
from tests.models import family_ckpts as fc

pytest.importorskip("transformers")
warnings.filterwarnings("ignore", module="transformers")
runner = CliRunner()
TOL = 1e-5


@pytest.mark.parametrize("text,want", [
    ("224", 224), (" 224 ", 224), ("224x320", (224, 320)), ("224X320", (224, 320)),
    ("224 x 320", (224, 320)), ("224×320", (224, 320)), ("96x96", 96), (None, None),
    (224, 224), ((16, 24), (16, 24)), ([16, 16], 16),
])
def test_img_size_forms(text, want):
    assert parse_img_size(text) == want


@pytest.mark.parametrize("text", ["abc", "224x", "x224", "224x320x3", "-16", "0", "0x16",
                                  "22.4", "", (16,), (16, 24, 3), 1.5])
def test_bad_img_size_forms_are_refused(text):
    with pytest.raises(DinoevalError, match="--img-size"):
        parse_img_size(text)


def test_square_only_commands_say_so():
    with pytest.raises(DinoevalError, match="not square, and retrieval resizes"):
        parse_img_size("16x24", square_only="retrieval resizes each image whole")
    assert BackboneOptions(img_size="16x24").img_size == (16, 24)


def _official_rule(pos_1ND, G, g, *, offset, antialias):
    """DINO v1 / DINOv2 ``interpolate_pos_encoding``, written out from the official code."""
    if tuple(g) == (G, G):
        return pos_1ND
    grid = pos_1ND.float().reshape(1, G, G, -1).permute(0, 3, 1, 2)
    kw = ({"scale_factor": ((g[0] + offset) / G, (g[1] + offset) / G)} if offset
          else {"size": tuple(g)})
    out = F.interpolate(grid, mode="bicubic", antialias=antialias, **kw)
    return out.permute(0, 2, 3, 1).reshape(1, -1, pos_1ND.shape[-1])


def _dino_v1(tmp_path, size):
    """DINO v1 at ``size``: a timm ViT built at that size with the official-rule table."""
    from timm.models.vision_transformer import VisionTransformer

    m = fc.timm_vit()
    path = tmp_path / "dino.pth"
    torch.save(m.state_dict(), path)
    sd = m.state_dict()
    pos = sd["pos_embed"]
    g = (size[0] // 4, size[1] // 4)
    sd["pos_embed"] = torch.cat([pos[:, :1], _official_rule(pos[:, 1:], 4, g, offset=0.1,
                                                            antialias=False)], dim=1)
    ref = VisionTransformer(img_size=size, patch_size=4, embed_dim=64, depth=2, num_heads=1,
                            num_classes=0, global_pool="token").eval()
    ref.load_state_dict(sd)
    return path, ref.forward_features


def _official_v2_embeddings(model):
    """``transformers`` DINOv2 whose position table follows the official DINOv2 rule."""
    emb = model.embeddings

    def interpolate(embeddings, height, width):
        pos = emb.position_embeddings
        G = math.isqrt(pos.shape[1] - 1)
        g = (height // 4, width // 4)
        return torch.cat([pos[:, :1], _official_rule(pos[:, 1:], G, g, offset=0.1,
                                                     antialias=False)], dim=1)

    emb.interpolate_pos_encoding = interpolate


@pytest.mark.parametrize("size", [(16, 24), (24, 12), (20, 16)])
@pytest.mark.parametrize("family", ["dino", "dinov2", "dinov2-registers", "dinov3"])
def test_non_square_features_equal_the_reference_forward(tmp_path, family, size):
    x = torch.randn(2, 3, *size)
    if family == "dino":
        path, ref = _dino_v1(tmp_path, size)
    else:
        if family == "dinov3":
            m = fc.dinov3_hf_model()
            size = {(16, 24): (32, 48), (24, 12): (48, 16), (20, 16): (48, 32)}[size]  # patch 16
            x = torch.randn(2, 3, *size)
            sd = fc.dinov3_official(m)
        else:
            m = fc.dinov2_hf_model(registers=2 if family.endswith("registers") else 0)
            sd = fc.dinov2_official(m)
        path = tmp_path / "c.pth"
        torch.save(sd, path)
        ref = fc.hf_reference(m)
        if family == "dinov2":
            plain = ref(x)  # transformers' own rule (by size): not the official model's
            _official_v2_embeddings(m)
            assert float((plain - ref(x)).abs().max()) > 1e-3
    bb = load_backbone(str(path), img_size=f"{size[0]}x{size[1]}", num_heads=2 if
                       family != "dino" else 1)
    assert bb.img_size == size
    with torch.no_grad():
        ours, want = bb.tokens(x)[0], ref(x)
    assert ours.shape == want.shape
    diff = float((ours - want).abs().max())
    assert diff < TOL, diff


def test_cli_extract_at_non_square_size_equals_the_reference(tmp_path):
    """``extract --img-size 16x24``: features of the transformed images equal the reference."""
    path, ref = _dino_v1(tmp_path, (16, 24))
    r = runner.invoke(app, ["extract", "--ckpt", str(path), "--img-size", "16x24", "--data",
                            "digits:test[:12]", "--out", str(tmp_path / "f")])
    assert r.exit_code == 0, r.output
    (folder,) = (tmp_path / "f").iterdir()
    got = np.load(folder / "features.npy")
    bb = load_backbone(str(path), img_size=(16, 24))
    from dinoeval.data import get_source

    src = get_source("digits:test[:12]")
    x = make_transform(bb, src)(src.images[:12])
    with torch.no_grad():
        want = ref(x)[:, 0].numpy()
    np.testing.assert_allclose(got, want, atol=TOL)
    fs = extract_features(bb, src, kind="cls")
    np.testing.assert_allclose(fs.features, want, atol=TOL)


CMDS = [
    ["knn", "--train", "digits:train[:20]", "--val", "digits:test[:10]"],
    ["extract", "--data", "digits:test[:10]", "--out", "OUT"],
    ["linear", "--train", "digits:train[:20]", "--val", "digits:test[:10]"],
    ["clusters", "--data", "digits:test[:10]"],
    ["collapse-stats", "--data", "digits:test[:10]"],
    ["attention", "--data", "digits:test", "--n", "1", "--out", "OUT"],
    ["extract-sharded", "--data", "digits:test[:10]", "--out", "OUT"],
    ["retrieval", "--query", "digits:test[:10]"],
    ["copy-detection"],
    ["dense", "--train", "shapes:train", "--test", "shapes:test"],
]


def test_the_list_holds_every_command_with_an_input_size():
    """Every command with --img-size is in CMDS (pretrain's is its training crop, not a
    backbone's input: it is checked with the pretrain options)."""
    import click
    import typer.main

    group = typer.main.get_command(app)
    ctx = click.Context(group)
    have = {n for n in group.list_commands(ctx)
            if any("--img-size" in getattr(p, "opts", ()) for p in
                   group.get_command(ctx, n).params)}
    assert have - {"pretrain"} == {c[0] for c in CMDS}


@pytest.mark.parametrize("cmd", CMDS, ids=[c[0] for c in CMDS])
def test_every_img_size_option_gives_one_error_line(tmp_path, cmd, bad="16x"):
    """Every command that takes --img-size parses it the same way: one ``error:`` line, exit 2,
    before any work."""
    torch.save(fc.timm_vit().state_dict(), tmp_path / "dino.pth")
    rest = [str(tmp_path / "f") if a == "OUT" else a for a in cmd[1:]]
    args = [cmd[0], "--ckpt", str(tmp_path / "dino.pth"), *rest, "--img-size", bad]
    r = runner.invoke(app, args)
    assert r.exit_code == 2, (cmd, r.output)
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "--img-size" in errors[0] and "HxW" in errors[0], r.output


def test_non_square_in_square_only_commands_and_alignment(tmp_path):
    torch.save(fc.timm_vit().state_dict(), tmp_path / "dino.pth")
    ck = str(tmp_path / "dino.pth")
    for args in (["retrieval", "--ckpt", ck, "--query", "digits:test[:10]"],
                 ["copy-detection", "--ckpt", ck]):
        r = runner.invoke(app, [*args, "--img-size", "16x24"])
        assert r.exit_code == 2 and "not square" in r.output, r.output
    r = runner.invoke(app, ["collapse-stats", "--ckpt", ck, "--data", "digits:test[:10]",
                            "--img-size", "16x24"])
    assert r.exit_code == 2 and "--align-pairs 0" in r.output, r.output
    r = runner.invoke(app, ["collapse-stats", "--ckpt", ck, "--data", "digits:test[:10]",
                            "--img-size", "16x24", "--align-pairs", "0"])
    assert r.exit_code == 0 and "16x24" in r.output, r.output
    r = runner.invoke(app, ["extract", "--ckpt", ck, "--data", "digits:test[:10]", "--out",
                            str(tmp_path / "f"), "--img-size", "16x26"])
    assert r.exit_code == 2 and "16x26 is not a multiple of the patch size 4" in r.output
