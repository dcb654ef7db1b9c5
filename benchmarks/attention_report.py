"""Benchmark: the attention comparison report for 3 checkpoints x 16 images x 6 heads.

Also (``--throughput``) the speed of explicit attention extraction alone, images per second, for
ViT-S/16 at 224 px and a small ViT at 28 px, on the given device; rows go to
``results/attention_throughput.csv``.

Target (issue 5): builds in under a minute on 2 CPU cores. Three random-init ViT-S (6 heads)
with different seeds stand in for three checkpoints; the report is written the same way for
trained ones. Times the whole ``attention_report`` (model loading, extraction, masks, Jaccard,
HTML with every image embedded, PNG figures) and appends a row to
``results/attention_report_benchmark.csv``.

    .venv/bin/python benchmarks/attention_report.py [--data shapes:test] [--arch vit_small_p8_64]
    .venv/bin/python benchmarks/attention_report.py --throughput [--device cuda]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from dinoeval.data import get_source
from dinoeval.models import load_backbone
from dinoeval.models.attention import cls_attention
from dinoeval.pipeline.attention import AttentionConfig, image_captions, run_attentions
from dinoeval.report.attention_page import write_attention_report

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="shapes:test")
    ap.add_argument("--arch", default="vit_small_p8_64", help="random:ARCH for every checkpoint")
    ap.add_argument("--checkpoints", type=int, default=3)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("/tmp/dinoeval-attention-bench"))
    ap.add_argument("--csv", type=Path, default=ROOT / "results/attention_report_benchmark.csv")
    ap.add_argument("--throughput", action="store_true", help="time extraction alone instead")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.throughput:
        throughput(args)
        return

    source = get_source(args.data)
    loaders = [functools.partial(load_backbone, f"random:{args.arch}", seed=s)
               for s in range(args.checkpoints)]
    config = AttentionConfig(device=args.device)
    start = time.perf_counter()
    indices = list(range(args.n))
    runs = run_attentions(loaders, source, indices, config)
    html = write_attention_report(runs, [source.load(i) for i in indices], args.out,
                                  captions=image_captions(source, indices), data=source.spec)
    total = time.perf_counter() - start
    extract = sum(r.seconds for r in runs)
    heads = runs[0].num_heads
    html_mb = html.stat().st_size / 2**20
    row = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": args.data, "arch": args.arch, "checkpoints": args.checkpoints, "images": args.n,
        "heads": heads, "threads": args.threads, "device": args.device,
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "total_s": round(total, 2), "extract_s": round(extract, 2),
        "html_mb": round(html_mb, 2),
        "pngs": len(list((args.out / "figures").glob("*.png"))),
        "load_avg_1m": round(os.getloadavg()[0], 1),
    }
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([row])
    frame.to_csv(args.csv, mode="a", header=not args.csv.exists(), index=False)
    print(frame.T.to_string(header=False))
    print(f"report: {html} — target < 60 s: {'met' if total < 60 else 'MISSED'}")


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.machine()} cpu, {torch.get_num_threads()} threads"


def throughput(args: argparse.Namespace) -> None:
    """Images per second of :func:`cls_attention` (last block, all heads), after a warm-up."""
    cases = [("vit_small_patch16_224", 224, 32), ("vit_tiny_p4_28", 28, 256)]
    rows = []
    for arch, size, batch in cases:
        bb = load_backbone(f"random:{arch}").to(args.device)
        assert bb.model is not None
        x = torch.randn(batch, 3, size, size, device=args.device)
        cls_attention(bb.model, x, num_prefix_tokens=bb.num_prefix_tokens)  # warm-up
        reps, start = 0, time.perf_counter()
        while reps < 3 or time.perf_counter() - start < 5:
            cls_attention(bb.model, x, num_prefix_tokens=bb.num_prefix_tokens)
            reps += 1
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        sec = time.perf_counter() - start
        rows.append({"timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                     "arch": bb.name, "img_size": size, "batch": batch, "device": args.device,
                     "device_name": _device_name(args.device), "threads": args.threads,
                     "images_per_s": round(reps * batch / sec, 1),
                     "load_avg_1m": round(os.getloadavg()[0], 1)})
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False))
    out = args.csv.with_name("attention_throughput.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, mode="a", header=not out.exists(), index=False)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"wall (incl. imports): {time.perf_counter() - t0:.1f} s")
