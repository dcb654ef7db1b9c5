"""k-NN and extraction benchmark -> results/bench_knn.csv (one run, side by side).

k-NN: 60,000 train x 10,000 test x 384-d features (random Gaussian, labels in 10 classes), all four
k (10, 20, 100, 200), T = 0.07:
  * dinoeval  — one faiss search at k=200, votes for every k from its prefix;
  * official  — DINO's eval_knn.py approach: torch matmul + topk over chunks of 100 test rows,
                 recomputed for each k;
  * sklearn   — KNeighborsClassifier(metric="cosine", algorithm="brute", weights=exp(sim/T)),
                 one fit/predict per k;
  * gemm      — one fp32 (10,000 x 384) @ (384 x 60,000) matmul: the roofline.
Predictions of dinoeval and the official approach are compared for every k.

Extraction: images/s of extract_features against the bare model forward on the same,
already-transformed batches (ViT-T/4 at 28 px on Fashion-MNIST, and ViT-S/16 at 224 on an
ImageFolder of PNG files).

Run: .venv/bin/python benchmarks/knn.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dinoeval.data import get_source
from dinoeval.eval.knn import knn_classify
from dinoeval.features import extract_features, iterate_batches, make_transform
from dinoeval.models import load_backbone

RESULTS = Path(__file__).resolve().parents[1] / "results"
KS = (10, 20, 100, 200)
T = 0.07


def official_knn(train, train_y, test, ks, C, chunk=100):
    """DINO eval_knn.py's loop: per k, chunks of 100 test rows, matmul + topk + one-hot vote."""
    train_t = torch.nn.functional.normalize(torch.from_numpy(train), dim=1).t().contiguous()
    test_t = torch.nn.functional.normalize(torch.from_numpy(test), dim=1)
    labels = torch.from_numpy(train_y)
    preds = {}
    for k in ks:
        out = []
        one_hot = torch.zeros(chunk * k, C)
        for s in range(0, len(test_t), chunk):
            feats = test_t[s : s + chunk]
            b = len(feats)
            sims = feats @ train_t
            dist, idx = sims.topk(k, largest=True, sorted=True)
            cand = labels.view(1, -1).expand(b, -1).gather(1, idx)
            one_hot.resize_(b * k, C).zero_()
            one_hot.scatter_(1, cand.reshape(-1, 1), 1)
            w = dist.clone().div_(T).exp_()
            probs = (one_hot.view(b, -1, C) * w.view(b, -1, 1)).sum(1)
            out.append(probs.argmax(1))
        preds[k] = torch.cat(out).numpy()
    return preds


def sklearn_knn(train, train_y, test, ks):
    from sklearn.neighbors import KNeighborsClassifier

    preds = {}
    for k in ks:
        clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute",
                                   weights=lambda d: np.exp((1.0 - d) / T), n_jobs=-1)
        preds[k] = clf.fit(train, train_y).predict(test)
    return preds


def timed(fn, *a, repeat=1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*a)
        best = min(best, time.perf_counter() - t0)
    return best, out


def knn_rows(n_train, n_test, dim, with_sklearn):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(10, dim)).astype(np.float32)
    train_y = rng.integers(0, 10, n_train)
    test_y = rng.integers(0, 10, n_test)
    train = (centers[train_y] * 0.3 + rng.normal(size=(n_train, dim))).astype(np.float32)
    test = (centers[test_y] * 0.3 + rng.normal(size=(n_test, dim))).astype(np.float32)
    a, b = torch.from_numpy(test), torch.from_numpy(train)
    _ = a[:1000] @ b[:1000].T  # warm-up
    t_gemm, _ = timed(lambda: a @ b.T, repeat=3)
    t_ours, res = timed(lambda: knn_classify(train, train_y, test, test_y, ks=KS, temperature=T),
                        repeat=2)
    t_off, off = timed(lambda: official_knn(train, train_y, test, KS, 10))
    rows = [
        dict(bench="knn", method="gemm_roofline", seconds=t_gemm),
        dict(bench="knn", method="dinoeval_faiss", seconds=t_ours,
             top1_k20=res.top1[20], ratio_to_gemm=t_ours / t_gemm),
        dict(bench="knn", method="official_torch_chunks100", seconds=t_off,
             top1_k20=float(np.mean(off[20] == test_y)), ratio_to_gemm=t_off / t_gemm,
             identical_predictions=all(np.array_equal(off[k], res.predictions[k]) for k in KS),
             pred_agreement=min(float(np.mean(off[k] == res.predictions[k])) for k in KS)),
    ]
    if with_sklearn:
        t_sk, sk = timed(lambda: sklearn_knn(train, train_y, test, KS))
        rows.append(dict(bench="knn", method="sklearn_brute_cosine", seconds=t_sk,
                         top1_k20=float(np.mean(sk[20] == test_y)), ratio_to_gemm=t_sk / t_gemm,
                         pred_agreement=min(float(np.mean(sk[k] == res.predictions[k]))
                                            for k in KS)))
    for r in rows:
        r.update(n_train=n_train, n_test=n_test, dim=dim)
    return rows


def extraction_rows(spec_backbone, source, batch_size, label):
    bb = load_backbone(spec_backbone)
    tf = make_transform(bb, source)
    batches = [x for x, _, _ in iterate_batches(source, tf, batch_size=batch_size)]
    model = bb.model

    def bare():
        with torch.inference_mode():
            for x in batches:
                model.forward_features(x)

    bare()  # warm-up
    t_bare, _ = timed(bare, repeat=2)
    t_ext, _ = timed(lambda: extract_features(bb, source, batch_size=batch_size), repeat=2)
    n = len(source)
    return [dict(bench="extract", method=label, images=n, bare_img_s=n / t_bare,
                 extract_img_s=n / t_ext, ratio=(n / t_ext) / (n / t_bare))]


def imagefolder(n, size):
    from PIL import Image

    root = Path(tempfile.mkdtemp()) / "train"
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"c{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size + 40, 3), np.uint8)).save(d / f"{i}.png")
    return get_source(f"imagefolder:{root}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, no sklearn")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    if args.quick:
        rows += knn_rows(6000, 1000, 384, with_sklearn=False)
    else:
        rows += knn_rows(60000, 10000, 384, with_sklearn=True)
    fm = get_source("fashion-mnist:test[:2048]")
    rows += extraction_rows("random:vit_tiny_p4_28", fm, 256, "ViT-T/4@28 fashion-mnist (memory)")
    rows += extraction_rows("random:vit_small_patch16_224", imagefolder(64, 256), 32,
                            "ViT-S/16@224 imagefolder PNG (files)")
    df = pd.DataFrame(rows)
    df["machine"] = f"{platform.machine()} {os.cpu_count()} cores"
    df["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("bench_knn_quick.csv" if args.quick else "bench_knn.csv")
    df.to_csv(out, index=False)
    print(df.to_string())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
