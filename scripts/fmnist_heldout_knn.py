"""Compare Fashion-MNIST checkpoints without touching the test split.

k-NN (k=20, T=0.07, CLS features) with a 50,000-image bank and the other 10,000 training images
as queries (seed-0 permutation of the training set). This picked the shipped checkpoint over the
18,000-step one (results/demo_fmnist/NOTES.md, knn_heldout_train_runs.csv).

Run: .venv/bin/python scripts/fmnist_heldout_knn.py OUT.csv NAME=CKPT [NAME=CKPT ...]
     (CKPT may be ``pixels``)
"""

from __future__ import annotations

import csv
import sys

import numpy as np

from dinoeval.data import get_source
from dinoeval.eval.knn import knn_classify
from dinoeval.pipeline import BackboneOptions, ExtractOptions, get_features

BANK, K = 50_000, 20


def main(out: str, candidates: list[str]) -> None:
    if not candidates or any("=" not in c for c in candidates):
        sys.exit("usage: fmnist_heldout_knn.py OUT.csv NAME=CKPT [NAME=CKPT ...]")
    src = get_source("fashion-mnist:train")
    perm = np.random.default_rng(0).permutation(len(src))
    bank, query = perm[:BANK], perm[BANK:]
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["backbone", "bank", "queries", "k", "top1", "top5"])
        for cand in candidates:
            name, ckpt = cand.split("=", 1)
            fs = get_features(BackboneOptions().load(ckpt), src, ExtractOptions())
            r = knn_classify(fs.features[bank], fs.labels[bank], fs.features[query],
                             fs.labels[query], ks=(K,))
            print(f"{name}: top1 {r.top1[K]:.4f} top5 {r.top5[K]:.4f}", flush=True)
            w.writerow([name, f"fashion-mnist:train ({BANK:,}, seed-0 permutation)",
                        f"the other {len(query):,}", K, round(r.top1[K], 4), round(r.top5[K], 4)])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
