"""Checkpoints pickled with protocol 3, 4 or 5 (``torch.save(..., pickle_protocol=4)``, zip or
legacy format) load with the weights-only loader and its allow-list, without a library warning;
what the allow-list refuses stays refused."""

import argparse
import pickle
import pickletools
import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dinoeval.cli import app
from dinoeval.errors import DinoevalError
from dinoeval.models import UnsafeCheckpointError, load_backbone, read_checkpoint
from dinoeval.models.checkpoints import SAFE_GLOBALS, _numpy_globals
from dinoeval.models.pickle_compat import downgrade_pickle
from tests.models import family_ckpts as fc


def _dino_train(sd: dict) -> dict:
    """An official DINO training checkpoint: argparse args, numpy best_acc, center."""
    net = {f"backbone.{k}": v for k, v in sd.items()}
    return {"teacher": net, "student": net, "epoch": 3, "best_acc": np.float64(77.5),
            "args": argparse.Namespace(arch="vit_small", num_heads=1, out_dim=8),
            "dino_loss": {"center": torch.arange(8.0).reshape(1, 8)}}


@pytest.mark.parametrize("protocol", [3, 4, 5])
@pytest.mark.parametrize("zipped", [False, True], ids=["legacy", "zip"])
def test_old_protocols_load_weights_only_and_silently(tmp_path, protocol, zipped):
    m = fc.timm_vit()
    p = tmp_path / "dino_deitsmall16.pth"
    torch.save(_dino_train(m.state_dict()), p, pickle_protocol=protocol,
               _use_new_zipfile_serialization=zipped)
    with (pytest.raises(Exception, match="Unsupported operand"),  # torch alone cannot
          warnings.catch_warnings(),
          torch.serialization.safe_globals(SAFE_GLOBALS + _numpy_globals())):
        warnings.simplefilter("ignore")
        torch.load(p, weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no leaked library warning
        bb = load_backbone(str(p))
    assert bb.meta["epoch"] == 3 and bb.meta["arch"] == "vit_small"
    assert torch.equal(bb.center, torch.arange(8.0).reshape(1, 8))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(bb.tokens(x)[0], m.forward_features(x))


def test_rewritten_pickle_equals_the_original_object():
    """Strings, memo references, nested containers, floats, big ints, bytes and globals."""
    obj = {"a": [1, 2.5, "x" * 300, b"\x00\xffbytes"], "b": ("t", None, True, 2 ** 70),
           "shared": ["same"] * 3, "nested": {"k": {"k": [[], ()]}}, "od": dict(z=1)}
    obj["again"] = obj["a"]
    for protocol in (3, 4, 5):
        import io

        blob = downgrade_pickle(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
        assert blob[:2] == b"\x80\x02"
        names = {op.name for op, _, _ in pickletools.genops(blob)}
        assert not names & {"FRAME", "MEMOIZE", "STACK_GLOBAL", "SHORT_BINUNICODE",
                            "SHORT_BINBYTES"}
        assert pickle.loads(blob) == obj


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_protocol_4_does_not_open_the_allow_list(tmp_path):
    sd = fc.timm_vit().state_dict()
    torch.save({"model": sd, "x": _Evil()}, tmp_path / "evil.pth", pickle_protocol=4)
    with pytest.raises(UnsafeCheckpointError, match=r"pickles .*print, which could run code"):
        read_checkpoint(tmp_path / "evil.pth")
    torch.save({"model": sd, "acc": np.zeros(3)}, tmp_path / "array.pth", pickle_protocol=4)
    with pytest.raises(UnsafeCheckpointError, match="could run code"):
        read_checkpoint(tmp_path / "array.pth")


def test_an_opcode_that_cannot_be_rewritten_is_one_line_exit_2(tmp_path):
    p = tmp_path / "set.pth"
    torch.save({"model": fc.timm_vit().state_dict(), "tags": {"a", "b"}}, p, pickle_protocol=4)
    with pytest.raises(DinoevalError, match=r"protocol 4 and uses opcode ADDITEMS.*re-save"):
        read_checkpoint(p)
    r = CliRunner().invoke(app, ["inspect", str(p)])
    assert r.exit_code == 2 and "ADDITEMS" in r.output, r.output
    assert len([ln for ln in r.output.splitlines() if ln.startswith("error:")]) == 1
