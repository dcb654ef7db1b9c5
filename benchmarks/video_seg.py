"""Benchmark: seconds per frame and peak memory of label propagation, tiled vs dense, on CPU.

DINO's protocol at DAVIS 480p: frames of 480x832 pixels (854 floored to a multiple of 64) give a
30x52 token grid with patch 16 (ViT-S/16, ViT-B/16) and 60x104 with patch 8 (ViT-S/8, ViT-B/8);
features are 384-dimensional (ViT-S); the context is the first frame plus 7 previous ones, top-5
sources, a 12-patch neighbourhood. Features are random unit vectors (the cost does not depend on
their values); each measurement runs in a fresh process so that ``ru_maxrss`` (peak resident
memory) minus the process's resident size before the first frame is the propagation's own peak.

* ``tiled``: :class:`dinoeval.eval.video_seg.LabelPropagator` (tiles of 16x16 target patches, each
  against the source window its neighbourhood reaches);
* ``dense``: the official script's formulation, written out: an ``(h w) x (h w)`` neighbourhood
  mask repeated per context frame, the dense affinity ``exp(sim / 0.1)`` of every context frame,
  top-k threshold over all sources, normalisation, one matrix product with the labels.

    .venv/bin/python benchmarks/video_seg.py [--frames 3] [--threads 1]

Writes ``results/bench_video_seg.md`` (a table with the machine, thread count and date).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRIDS = ((30, 52, 16), (60, 104, 8))
DIM, CONTEXT, TOPK, RADIUS, LABELS = 384, 8, 5, 12, 4


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _dense_step(tar, feats, segs, mask):
    import torch

    n, hw = feats.shape[0], feats.shape[1]
    aff = torch.exp(torch.einsum("td,nsd->nts", tar, feats) / 0.1)
    aff *= mask.unsqueeze(0).repeat(n, 1, 1)
    aff = aff.transpose(2, 1).reshape(-1, hw)
    kth = aff.topk(TOPK, dim=0).values.min(0).values
    aff[aff < kth] = 0
    aff /= aff.sum(0, keepdim=True)
    return segs.permute(1, 0, 2).reshape(segs.shape[1], -1) @ aff


def one(method: str, h: int, w: int, frames: int, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    from dinoeval.eval.video_seg import LabelPropagator, PropagationConfig

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    feats = [F.normalize(torch.randn(h, w, DIM, generator=g), dim=-1) for _ in range(frames + CONTEXT)]
    labels = torch.softmax(torch.randn(LABELS, h, w, generator=g), 0)
    base = _rss_mib()
    times = []
    if method == "tiled":
        prop = LabelPropagator(feats[0], labels, PropagationConfig())
        for t in range(1, CONTEXT):  # fill the queue: 1 first + 7 previous frames
            prop.step(feats[t])
        for t in range(CONTEXT, CONTEXT + frames):
            t0 = time.perf_counter()
            prop.step(feats[t])
            times.append(time.perf_counter() - t0)
    else:
        ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        ii, jj = ii.reshape(-1), jj.reshape(-1)
        src = torch.stack([f.reshape(-1, DIM) for f in feats[:CONTEXT]])
        segs = labels.reshape(1, LABELS, -1).repeat(CONTEXT, 1, 1)
        for t in range(CONTEXT, CONTEXT + frames):
            t0 = time.perf_counter()
            mask = (((ii[:, None] - ii[None]).abs() <= RADIUS)
                    & ((jj[:, None] - jj[None]).abs() <= RADIUS)).float()
            _dense_step(feats[t].reshape(-1, DIM), src, segs, mask)
            times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "grid": f"{h}x{w}", "s_per_frame": sum(times) / len(times),
            "peak_mib": peak - base}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", nargs=3, metavar=("METHOD", "H", "W"))
    args = ap.parse_args()
    if args.one:
        m, h, w = args.one
        print(json.dumps(one(m, int(h), int(w), args.frames, args.threads)))
        return
    rows = []
    for h, w, p in GRIDS:
        for method in ("tiled", "dense"):
            res = subprocess.run([sys.executable, __file__, "--one", method, str(h), str(w),
                                  "--frames", str(args.frames), "--threads", str(args.threads)],
                                 capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
            row = json.loads(res.stdout.strip().splitlines()[-1])
            row["patch"] = p
            rows.append(row)
            print(row, flush=True)
    lines = [
        "# Label propagation: tiled vs dense (CPU)", "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores (shared with other jobs), torch threads = {args.threads}, "
        f"{args.frames} timed frames after the context is full.",
        f"Context {CONTEXT} frames (first + 7 previous), top-{TOPK}, radius {RADIUS} patches, "
        f"D = {DIM}, {LABELS} labels; DAVIS 480p frames are 480x832 pixels.", "",
        "`python benchmarks/video_seg.py` (each cell a fresh process; peak = max RSS minus RSS "
        "before the first frame).", "",
        "| grid (patch) | method | s / frame | peak MiB |", "|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['grid']} (p{r['patch']}) | {r['method']} | {r['s_per_frame']:.2f} | "
                     f"{r['peak_mib']:.0f} |")
    out = ROOT / "results" / "bench_video_seg.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
