"""The knn-bank runner: memory sizes, and two gloo processes under torchrun (extract-sharded and
knn-bank CLI, distributed k-NN)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dinoeval.data import get_source
from dinoeval.errors import DinoevalError
from dinoeval.eval.knn import knn_classify
from dinoeval.eval.knn_ooc import knn_classify_ooc
from dinoeval.features import extract_features
from dinoeval.features.entries import find_entry
from dinoeval.models import load_backbone
from dinoeval.pipeline.knn_bank import KnnBankConfig, parse_bytes

WORKER = Path(__file__).with_name("_dist_worker.py")


def test_parse_bytes():
    assert parse_bytes("1GB") == 2**30 and parse_bytes("512M") == 2**29
    assert parse_bytes("1.5GiB") == int(1.5 * 2**30) and parse_bytes(100) == 100
    with pytest.raises(DinoevalError, match="memory size"):
        parse_bytes("lots")


@pytest.mark.parametrize(("kw", "msg"), [({"max_memory": "lots"}, "memory size"),
                                         ({"bank_dtype": "int8"}, "--bank-dtype"),
                                         ({"backend": "numpy"}, "--backend")])
def test_bank_config_refuses_bad_settings_before_any_work(kw, msg):
    with pytest.raises(DinoevalError, match=msg):
        KnnBankConfig(**kw)


@pytest.mark.slow
def test_torchrun_two_gloo_ranks(tmp_path, tiny_vit):
    ckpt = tmp_path / "tiny.pth"
    torch.save(tiny_vit.state_dict(), ckpt)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 16)) * 2
    ty, qy = rng.integers(0, 4, 3000), rng.integers(0, 4, 60)  # ranks: 1024 + 1976 rows
    tx = (centers[ty] + rng.standard_normal((3000, 16))).astype(np.float32)
    qx = (centers[qy] + rng.standard_normal((60, 16))).astype(np.float32)
    np.save(tmp_path / "bank.npy", tx)
    np.savez(tmp_path / "knn.npz", ty=ty, qx=qx, qy=qy)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(ckpt), str(tmp_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900,  # a hang guard, not a timing
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    src = get_source("digits:test[:37]")
    fs = extract_features(load_backbone(str(ckpt), img_size=16), src, batch_size=8)
    entry = find_entry(tmp_path / "cache")
    assert np.array_equal(np.load(entry / "features.npy"), fs.features)  # bit-identical
    assert np.array_equal(np.load(entry / "labels.npy"), src.labels)
    want = knn_classify(tx, ty, qx, qy, ks=(1, 5, 20))
    for r in (0, 1):
        got = np.load(tmp_path / f"pred{r}.npy")
        for j, k in enumerate((1, 5, 20)):
            assert np.array_equal(got[j], want.predictions[k])
    assert not list((tmp_path / "cache").glob("*.shards"))  # shards merged and removed
    df = pd.read_csv(tmp_path / "cli.csv")
    assert len(df) == 2  # top1 + top5, written by rank 0 only
    # These random-ViT features sit near cos = 1, where float32 ties at the 5th neighbour happen:
    # compare with the one-process out-of-core path (same tie rule), not faiss's heap order.
    cli_ref = knn_classify_ooc(fs.features, fs.labels, fs.features, fs.labels, ks=(5,))
    assert df[df.metric == "top1"].value.iloc[0] == pytest.approx(cli_ref.top1[5])
