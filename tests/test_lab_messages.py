"""Messages that misled (issue 17, item 10): each names the option the user types, and library
warnings that say nothing to a user do not leak."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dinoeval.errors import DinoevalError


def test_val_fraction_error_names_the_option():
    from dinoeval.eval.linear import LinearProbeConfig

    with pytest.raises(DinoevalError, match=r"^--val-fraction must be in \(0, 1\), got 1.5$"):
        LinearProbeConfig(val_fraction=1.5).validate()


@pytest.mark.parametrize("spec,fix", [("digits:train[50]", "digits:train[:50]"),
                                      ("digits[7]", "digits[:7]")])
def test_a_subset_without_colon_explains_the_syntax(spec, fix):
    import re

    from dinoeval.data import get_source

    with pytest.raises(DinoevalError, match=r"a subset is written \[:N\] with a colon, e\.g\. "
                                            + re.escape(fix)):
        get_source(spec)


def test_pickle_protocol_4_checkpoint_gives_no_torch_warning(tmp_path, tiny_vit):
    """torch warns "Detected pickle protocol 4" before its weights-only loader reads (or refuses)
    the file; the user gets dinoeval's result or one-line error, not torch's warning."""
    from dinoeval.models.checkpoints import load_file

    torch.save(tiny_vit.state_dict(), tmp_path / "p4.pth", pickle_protocol=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            load_file(tmp_path / "p4.pth")
        except DinoevalError as err:
            assert "p4.pth" in str(err)


def test_cached_features_are_writable_for_torch_without_touching_the_file(tmp_path, tiny_vit):
    from dinoeval.features import extract_features
    from dinoeval.models import load_backbone
    from tests.conftest import make_source

    torch.save(tiny_vit.state_dict(), tmp_path / "t.pth")
    bb, src = load_backbone(str(tmp_path / "t.pth")), make_source(n=8)
    first = extract_features(bb, src, cache_dir=str(tmp_path / "c"))
    cached = extract_features(bb, src, cache_dir=str(tmp_path / "c"))
    assert cached.meta.get("cached")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch: "The given NumPy array is not writable"
        t = torch.as_tensor(cached.features)
    t.zero_()
    again = extract_features(bb, src, cache_dir=str(tmp_path / "c"))
    np.testing.assert_array_equal(again.features, first.features)
