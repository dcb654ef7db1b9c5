"""Out-of-core k-NN benchmark -> results/bench_knn_ooc.csv (+ bench_knn_precision.csv).

1. A synthetic 2,000,000 x 384 float32 bank (2.9 GiB; 1000 Gaussian classes) is generated once,
   block by block, into an ``.npy`` file in /tmp by a child process (so generation does not count in
   this process's peak RSS), then searched with ``knn_classify_ooc`` against
   ``--queries`` queries, ``--max-memory`` bounding the whole process as in ``dinoeval knn-bank``
   (the RSS already held is subtracted; the rest sizes the blocks). Reported: time, peak RSS of
   the search process (``ru_maxrss``), the RSS before the search (interpreter + torch + faiss),
   blocks, top-1.
   ``--check-rows N`` also compares predictions with the in-memory ``knn_classify`` on the first N
   bank rows (the full bank would need ~6 GB in memory).
2. ``--precision``: Fashion-MNIST raw pixels (784-d), 60k bank x ``--precision-queries`` test
   images, bank stored as float32 / float16 / bfloat16: top-1 and agreement with float32.

Run: .venv/bin/python benchmarks/knn_ooc.py [--queries 10000] [--max-memory 1GB] [--precision]
The machine's load average is written next to the numbers: on a shared 2-core box, times are
upper bounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parents[1] / "results"
KS = (10, 20, 100, 200)
NOISE = 5.0  # per-dimension noise around unit-variance class centres: top-1 well below 1


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB."""
    cur = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
    return cur, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(path: Path, n: int, d: int, classes: int, seed: int, block: int = 100_000) -> None:
    """Class-structured Gaussian features written block by block (no full array in memory)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
        for s in range(0, n, block):
            y = labels[s : s + block]
            x = centers[y] + NOISE * rng.standard_normal((len(y), d), dtype=np.float32)
            f.write(x.astype(np.float32).tobytes())
    np.save(path.with_name(path.stem + ".labels.npy"), labels)
    qy = rng.integers(0, classes, 50_000)
    qx = centers[qy] + NOISE * rng.standard_normal((len(qy), d), dtype=np.float32)
    np.save(path.with_name(path.stem + ".queries.npy"), qx.astype(np.float32))
    np.save(path.with_name(path.stem + ".qlabels.npy"), qy)
    os.replace(tmp, path)


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores"


def bench_bank(args: argparse.Namespace) -> list[dict]:
    import torch

    from dinoeval.eval.knn import knn_classify
    from dinoeval.eval.knn_ooc import BankReader, knn_classify_ooc, plan_blocks, write_bank
    from dinoeval.pipeline.knn_bank import working_budget

    torch.set_num_threads(args.threads)
    path = Path(args.bank)
    if not path.exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--generate-only", "--bank", str(path),
                        "--n", str(args.n), "--dim", str(args.dim)], check=True)
        print(f"generated {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    labels = np.load(path.with_name(path.stem + ".labels.npy"))
    qx = np.load(path.with_name(path.stem + ".queries.npy"))[: args.queries]
    qy = np.load(path.with_name(path.stem + ".qlabels.npy"))[: args.queries]
    src_path = path
    if args.bank_dtype != "float32":
        path = path.with_name(f"{path.stem}.{args.bank_dtype}.npy")
        if not path.exists():
            t0 = time.perf_counter()
            write_bank(src_path, path, args.bank_dtype)  # streamed, L2-normalised
            print(f"wrote {path} in {time.perf_counter() - t0:.0f} s", flush=True)
    reader = BankReader(path)
    # as `dinoeval knn-bank`: --max-memory bounds the whole process
    budget = working_budget(args.max_memory)
    plan = plan_blocks(len(reader), len(qx), reader.dim, max(KS), budget,
                       itemsize=reader.dtype.itemsize)
    base_rss, _ = rss_mb()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = knn_classify_ooc(path, labels, qx, qy, ks=KS, max_memory=budget,
                           num_classes=int(labels.max()) + 1)
    secs = time.perf_counter() - t0
    _, peak = rss_mb()
    preds = {f"k{k}": res.predictions[k] for k in KS}
    np.savez(src_path.with_name(f"{src_path.stem}.preds.{reader.storage}.{len(qx)}.npz"), **preds)
    ref_file = src_path.with_name(f"{src_path.stem}.preds.float32.{len(qx)}.npz")
    agree = {}
    if reader.storage != "float32" and ref_file.exists():
        ref = np.load(ref_file)
        agree = {f"pred_agreement_fp32_k{k}": float(np.mean(ref[f"k{k}"] == preds[f"k{k}"]))
                 for k in (20, 200)}
    rows = [dict(bench="knn_ooc", n_bank=len(reader), n_queries=len(qx), dim=reader.dim,
                 k=max(KS), max_memory=args.max_memory, working_budget_mb=budget / 2**20,
                 bank_dtype=reader.storage,
                 bank_gib=path.stat().st_size / 2**30, blocks=plan.n_blocks,
                 block_rows=plan.bank_rows, seconds=secs, peak_rss_mb=peak,
                 rss_before_search_mb=base_rss, top1_k20=res.top1[20], top1_k200=res.top1[200],
                 equal_in_memory="", **agree, machine=machine(),
                 load_avg_start=load0, load_avg_end=os.getloadavg()[0])]
    print(rows[-1], flush=True)
    if args.check_rows:
        m = args.check_rows
        sub = np.load(path, mmap_mode="r")[:m]
        nq = min(len(qx), 1000)
        ref = knn_classify(np.array(sub), labels[:m], qx[:nq], qy[:nq], ks=KS,
                           num_classes=int(labels.max()) + 1)
        out = knn_classify_ooc(sub, labels[:m], qx[:nq], qy[:nq], ks=KS, max_memory=64 * 2**20,
                               num_classes=int(labels.max()) + 1)
        same = all(np.array_equal(ref.predictions[k], out.predictions[k]) for k in KS)
        rows.append(dict(bench="knn_ooc_vs_in_memory", n_bank=m, n_queries=nq, dim=reader.dim,
                         k=max(KS), max_memory=64 * 2**20, bank_dtype="float32",
                         equal_in_memory=same, top1_k20=out.top1[20], machine=machine()))
        print(rows[-1], flush=True)
    return rows


def bench_precision(args: argparse.Namespace) -> list[dict]:
    import torch

    from dinoeval.data import get_source
    from dinoeval.eval.knn_ooc import precision_effect

    torch.set_num_threads(args.threads)
    tr, te = get_source("fashion-mnist:train"), get_source("fashion-mnist:test")
    tx = tr.array().reshape(len(tr), -1).astype(np.float32) / 255
    qx = te.array()[: args.precision_queries].reshape(-1, tx.shape[1]).astype(np.float32) / 255
    qy = te.labels[: args.precision_queries]
    t0 = time.perf_counter()
    eff = precision_effect(tx, tr.labels, qx, qy, ks=(10, 20, 100, 200), num_classes=10)
    secs = time.perf_counter() - t0
    rows = []
    for dt, r in eff.results.items():
        for k in r.ks:
            rows.append(dict(bench="knn_bank_precision", features="fashion-mnist pixels 784-d",
                             n_bank=len(tx), n_queries=len(qx), bank_dtype=dt, k=k,
                             top1=r.top1[k], top1_minus_fp32=r.top1[k] - eff.results[
                                 "float32"].top1[k],
                             pred_agreement_fp32=eff.agreement[dt][k], seconds_all=secs,
                             machine=machine(), load_avg=os.getloadavg()[0]))
    print(pd.DataFrame(rows).to_string(), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", default="/tmp/dinoeval_bank_2m_384.npy")
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--max-memory", default="1GB")
    ap.add_argument("--check-rows", type=int, default=0)
    ap.add_argument("--bank-dtype", default="float32", help="float32 | float16 | bfloat16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", action="store_true")
    ap.add_argument("--precision-queries", type=int, default=2000)
    ap.add_argument("--skip-bank", action="store_true")
    ap.add_argument("--generate-only", action="store_true")
    args = ap.parse_args()
    if args.generate_only:
        generate(Path(args.bank), args.n, args.dim, classes=1000, seed=0)
        return
    RESULTS.mkdir(exist_ok=True)
    if not args.skip_bank:
        rows = pd.DataFrame(bench_bank(args))
        out = RESULTS / "bench_knn_ooc.csv"
        if out.exists():  # keep the rows of other bank dtypes
            old = pd.read_csv(out)
            keep = ~old.bank_dtype.isin(rows.bank_dtype) | ~old.bench.isin(rows.bench)
            rows = pd.concat([old[keep], rows], ignore_index=True)
        rows.to_csv(out, index=False)
    if args.precision:
        pd.DataFrame(bench_precision(args)).to_csv(RESULTS / "bench_knn_precision.csv",
                                                   index=False)


if __name__ == "__main__":
    main()
