"""Grid linear probe vs scikit-learn's LogisticRegression on 60,000 x 1,536 features.

Features: Fashion-MNIST (60k train / 10k test, real images) mapped to 1,536 dims by a fixed random
ReLU layer, ``relu(x P)`` with ``x`` the 784 pixels in [0, 1] and ``P ~ N(0, 1/784)`` (seed 0) — a
random one-layer network, cheap enough to build on 2 CPU cores. Every method sees the same
features and the same rule: hold out a stratified 10% of TRAIN (seed 0), pick the setting with the
best held-out top-1, refit it on all of TRAIN, report top-1 on TEST.

Rows (appended to ``results/bench_linear.csv`` as each method finishes): method, settings tried,
chosen setting, held-out and test top-1, seconds, threads, and the 1-minute load average before and
after. The 2 cores are shared with other jobs, so wall ``seconds`` are upper bounds;
``cpu_seconds`` (process CPU time over all threads) divided by ``threads`` estimates the wall time
on dedicated cores.

    .venv/bin/python benchmarks/linear.py [--sklearn-cs 0.003 0.01 0.03] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
import torch

from dinoeval.data import fashion_mnist
from dinoeval.eval.linear import LinearProbeConfig, linear_probe, stratified_split

OUT = Path(__file__).resolve().parents[1] / "results" / "bench_linear.csv"
FIELDS = ["method", "n_train", "n_test", "dim", "settings", "chosen", "val_top1", "test_top1",
          "seconds", "cpu_seconds", "threads", "load_before", "load_after", "features"]
FEATURES = "fashion-mnist pixels -> relu(x P), P~N(0,1/784) seed 0, 1536-d"


def random_relu_features(dim: int = 1536, seed: int = 0):
    tr, te = fashion_mnist("train"), fashion_mnist("test")
    p = torch.randn(784, dim, generator=torch.Generator().manual_seed(seed)) / 28.0

    def f(src):
        x = torch.from_numpy(src.array().reshape(len(src), -1).astype(np.float32) / 255.0)
        return torch.relu(x @ p).numpy()

    return f(tr), tr.labels, f(te), te.labels


def write(row: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    new = not OUT.exists()
    with OUT.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in FIELDS})
    print(row, flush=True)


def ours(mode: str, x, y, xt, yt, threads: int) -> None:
    cfg = LinearProbeConfig(mode=mode)
    load0, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    r = linear_probe(x, y, xt, yt, config=cfg)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    write({"method": f"dinoeval-{mode}", "n_train": len(x), "n_test": len(xt), "dim": x.shape[1],
           "settings": len(r.val_top1), "chosen": r.chosen_text,
           "val_top1": dict(r.val_top1)[r.chosen_text], "test_top1": r.top1,
           "seconds": round(secs, 1), "cpu_seconds": round(cpu, 1), "threads": threads,
           "load_before": load0,
           "load_after": os.getloadavg()[0], "features": FEATURES})


def sklearn_logreg(cs: list[float], x, y, xt, yt, threads: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    load0, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    sc = StandardScaler().fit(x)
    xs, xts = sc.transform(x), sc.transform(xt)
    fit, val = stratified_split(y, 0.1, 0)
    scores = []
    for c in cs:
        m = LogisticRegression(C=c, max_iter=500).fit(xs[fit], y[fit])
        scores.append(m.score(xs[val], y[val]))
        print(f"sklearn C={c:g}: held-out top-1 {scores[-1]:.4f} "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
    best = int(np.argmax(scores))
    m = LogisticRegression(C=cs[best], max_iter=500).fit(xs, y)
    write({"method": "sklearn-LogisticRegression(lbfgs)", "n_train": len(x), "n_test": len(xt),
           "dim": x.shape[1], "settings": len(cs), "chosen": f"C={cs[best]:g}",
           "val_top1": scores[best], "test_top1": m.score(xts, yt),
           "seconds": round(time.perf_counter() - t0, 1),
           "cpu_seconds": round(time.process_time() - c0, 1), "threads": threads,
           "load_before": load0, "load_after": os.getloadavg()[0], "features": FEATURES})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sklearn-cs", type=float, nargs="*", default=[0.003, 0.01, 0.03])
    ap.add_argument("--skip", nargs="*", default=[], choices=["grid", "logreg", "sklearn"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)  # numpy/scikit-learn BLAS
    x, y, xt, yt = random_relu_features()
    if "grid" not in args.skip:
        ours("grid", x, y, xt, yt, args.threads)
    if "logreg" not in args.skip:
        ours("logreg", x, y, xt, yt, args.threads)
    if "sklearn" not in args.skip and args.sklearn_cs:
        sklearn_logreg(args.sklearn_cs, x, y, xt, yt, args.threads)


if __name__ == "__main__":
    main()
