"""Two gloo processes under torchrun: sharded extraction and distributed k-NN."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dinoeval.eval.knn import knn_classify
from dinoeval.features import extract_features
from dinoeval.models import load_backbone
from tests.conftest import make_source

WORKER = Path(__file__).with_name("_dist_worker.py")


@pytest.mark.slow
def test_torchrun_two_gloo_ranks(tmp_path, tiny_vit):
    ckpt = tmp_path / "tiny.pth"
    torch.save(tiny_vit.state_dict(), ckpt)
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 16)) * 2
    ty, qy = rng.integers(0, 4, 1000), rng.integers(0, 4, 60)
    tx = (centers[ty] + rng.standard_normal((1000, 16))).astype(np.float32)
    qx = (centers[qy] + rng.standard_normal((60, 16))).astype(np.float32)
    np.save(tmp_path / "bank.npy", tx)
    np.savez(tmp_path / "knn.npz", ty=ty, qx=qx, qy=qy)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(ckpt), str(tmp_path)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ref = extract_features(load_backbone(str(ckpt)), make_source(n=37), batch_size=8).features
    for r in (0, 1):
        assert np.array_equal(np.load(tmp_path / f"feats{r}.npy"), ref)  # bit-identical
    want = knn_classify(tx, ty, qx, qy, ks=(1, 5, 20))
    for r in (0, 1):
        got = np.load(tmp_path / f"pred{r}.npy")
        for j, k in enumerate((1, 5, 20)):
            assert np.array_equal(got[j], want.predictions[k])
    assert not list((tmp_path / "cache").glob("*.shards"))  # shards merged and removed
    df = pd.read_csv(tmp_path / "cli.csv")  # written by rank 0 only
    src = make_source(n=37)
    cli_ref = knn_classify(ref, src.labels, ref, src.labels, ks=(5,))
    assert len(df) == 2
    assert df[df.metric == "top1"].value.iloc[0] == pytest.approx(cli_ref.top1[5])
