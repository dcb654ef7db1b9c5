"""Pretraining step benchmark -> results/bench_pretrain.csv.

For fixed configs, times ``train_step`` (synchronised phases) and reports images/s, the split
between augmentation, forward+backward and the update, and peak memory (CUDA: peak allocated;
CPU: growth of the process's peak RSS during the timed steps, an upper bound that includes
allocator caching), and the CPU seconds per step (what a step costs with the machine to itself,
since the 2 cores here are shared with other jobs). Also times the same multi-crop recipe done
the usual way, one PIL image at a time through torchvision transforms, on the same batch: the
reference the batched augmentation replaces.

Configs:
  * ``fmnist-cpu``  — the Fashion-MNIST recipe (ViT d128x3/7 at 28 px, 2x28 + 4x14 crops,
                      K=1024, BatchNorm head, batch 64);
  * ``vit_d128x3_p4_28px`` — a wider ViT d128x3/4 at 28 px, 2x28 + 4x12 crops, K=1024, batch 64;
  * ``vit_small_224`` — ViT-S/16 with the paper's crops (2x224 + 8x96, K=65536), batch 8 on CPU
                      and 64 on a GPU.

Run: .venv/bin/python benchmarks/pretrain.py [--device cuda] [--steps 5] [--threads 2]
     .venv/bin/python benchmarks/pretrain.py --curve runs/fm [runs/fm2 ...] --name fmnist
       (runs' online k-NN curves -> results/pretrain_<name>_curve.csv)
The CPU here is shared with other jobs: the load average is recorded next to every row.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import sys
import time
from pathlib import Path

# This file is named like the package it measures: keep its folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from pretrain.config import PretrainConfig, recipe_config  # noqa: E402
from pretrain.data import TrainData  # noqa: E402
from pretrain.distributed import DistEnv  # noqa: E402
from pretrain.schedules import Schedules  # noqa: E402
from pretrain.step import (  # noqa: E402
    Trainer,
    build_augment,
    build_loss,
    build_models,
    build_optimizer,
    train_step,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"


def make_trainer(cfg: PretrainConfig, device: torch.device) -> Trainer:
    student, teacher = build_models(cfg)
    student.to(device)
    teacher.to(device)
    sched = Schedules(100, cfg.epochs, cfg.lr_scaled, cfg.min_lr, cfg.warmup_epochs,
                      cfg.weight_decay, cfg.weight_decay_end, cfg.momentum_teacher)
    data = TrainData(source=None, images=None, train_indices=np.arange(0),  # type: ignore[arg-type]
                     probe=None, load_size=cfg.img_size or 224)
    return Trainer(cfg, DistEnv(), device, student, student, teacher, build_loss(cfg).to(device),
                   build_optimizer(student), sched, build_augment(cfg), data, step=500)


def peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_steps(cfg: PretrainConfig, images: torch.Tensor, device: torch.device, steps: int
                ) -> dict[str, float]:
    tr = make_trainer(cfg, device)
    train_step(tr, images, sync_timing=True)  # warm-up (allocations, kernels)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    mem0 = peak_mem_mb(device)
    rows = []
    cpu0 = time.process_time()
    for _ in range(steps):
        _, t = train_step(tr, images, sync_timing=True)
        tr.step += 1
        rows.append(t)
    cpu = (time.process_time() - cpu0) / steps
    aug = float(np.median([r["aug_s"] for r in rows]))
    fb = float(np.median([r["fwd_bwd_s"] for r in rows]))
    upd = float(np.median([r["update_s"] for r in rows]))
    step = aug + fb + upd
    mem = peak_mem_mb(device)
    return {"images_per_s": len(images) / step, "step_s": step, "cpu_s_per_step": cpu,
            "aug_s": aug, "fwd_bwd_s": fb, "update_s": upd, "aug_fraction": aug / step,
            "peak_mem_mb": mem if device.type == "cuda" else mem - mem0 + 0.0,
            "process_peak_rss_mb": peak_mem_mb(torch.device("cpu"))}


def torchvision_multicrop(cfg: PretrainConfig):
    """The usual per-image pipeline (DINO's DataAugmentationDINO, sizes from ``cfg``)."""
    from torchvision import transforms as T

    def photometric(p_blur: float, p_sol: float) -> list:
        return [T.RandomHorizontalFlip(),
                T.RandomApply([T.ColorJitter(*cfg.color_jitter)], p=cfg.color_jitter_p),
                T.RandomGrayscale(p=cfg.grayscale_p),
                T.RandomApply([T.GaussianBlur(9, sigma=cfg.blur_sigma)], p=p_blur),
                T.RandomSolarize(128, p=p_sol), T.ToTensor(),
                T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]

    g1 = T.Compose([T.RandomResizedCrop(cfg.img_size, cfg.global_crops_scale), *photometric(1, 0)])
    g2 = T.Compose([T.RandomResizedCrop(cfg.img_size, cfg.global_crops_scale),
                    *photometric(0.1, cfg.solarize_p)])
    loc = T.Compose([T.RandomResizedCrop(cfg.local_size, cfg.local_crops_scale),
                     *photometric(0.5, 0)])

    def run(pils: list) -> None:
        for im in pils:
            g1(im)
            g2(im)
            for _ in range(cfg.local_crops_number):
                loc(im)

    return run


def bench_reference_aug(cfg: PretrainConfig, images: torch.Tensor, repeat: int = 3) -> float:
    from PIL import Image

    arr = images.numpy()
    pils = [Image.fromarray(a if a.ndim == 3 else np.repeat(a[..., None], 3, 2)) for a in arr]
    run = torchvision_multicrop(cfg)
    run(pils[:4])
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run(pils)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def configs(device: torch.device) -> dict[str, tuple[PretrainConfig, tuple[int, ...]]]:
    fm = recipe_config("fmnist-cpu").resolved((28, 28))
    wider = recipe_config("fmnist-cpu", patch_size=4, local_size=12, embed_dim=128, depth=3,
                          num_heads=2, out_dim=1024, head_hidden_dim=512,
                          head_bottleneck_dim=128).resolved((28, 28))
    vits = PretrainConfig(arch="vit_small", patch_size=16, batch_size=64 if device.type == "cuda"
                          else 8, amp="bf16" if device.type == "cuda" else "none").resolved(None)
    return {"fmnist-cpu": (fm, (fm.batch_size, 28, 28)),
            "vit_d128x3_p4_28px": (wider, (wider.batch_size, 28, 28)),
            "vit_small_224": (vits, (vits.batch_size, 256, 256, 3))}


def write_curve(runs: list[Path], name: str) -> Path:
    """k-NN-vs-steps of runs (their epochs.csv) with the epoch-mean loss statistics, in one long
    table with the run's directory name and its main settings."""
    import json

    cols = ["step", "epoch", "elapsed_s", "knn_top1", "knn_top5", "loss", "teacher_entropy", "kl",
            "center_norm"]
    frames = []
    for run in runs:
        cfg = json.loads((run / "config.json").read_text())
        ep = pd.read_csv(run / "epochs.csv")[cols]
        ep.insert(0, "run", run.name)
        ep.insert(1, "setting", f"p{cfg['patch_size']} d{cfg['embed_dim']}x{cfg['depth']} "
                  f"K{cfg['out_dim']} lr{cfg['lr']:g} m{cfg['momentum_teacher']:g} "
                  f"freeze{cfg['freeze_last_layer']} crops{cfg['global_crops_scale']}"
                  f"/{cfg['local_crops_scale']} sol{cfg['solarize_p']:g}")
        frames.append(ep)
    out = RESULTS / f"pretrain_{name}_curve.csv"
    pd.concat(frames, ignore_index=True).to_csv(out, index=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--curve", type=Path, nargs="+", default=None,
                    help="run directories: write their k-NN curves")
    ap.add_argument("--name", default="fmnist")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=None, help="one config name")
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_pretrain.csv")
    args = ap.parse_args()
    if args.curve is not None:
        print(f"wrote {write_curve(args.curve, args.name)}")
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name, (cfg, shape) in configs(device).items():
        if args.only and name != args.only:
            continue
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
        cfg = dataclasses.replace(cfg, drop_path=0.1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            res = bench_steps(cfg, images, device, args.steps)
        ref = bench_reference_aug(cfg, images) if device.type == "cpu" else float("nan")
        rows.append({
            "config": name, "device": device.type if device.type == "cpu"
            else torch.cuda.get_device_name(device), "threads": args.threads,
            "batch": cfg.batch_size, "global": f"2x{cfg.img_size}",
            "local": f"{cfg.local_crops_number}x{cfg.local_size}", "out_dim": cfg.out_dim,
            "amp": cfg.amp, "steps": args.steps, **res,
            "torchvision_per_image_aug_s": ref,
            "aug_speedup_vs_torchvision": ref / res["aug_s"] if ref == ref else float("nan"),
            "load_avg_1min": os.getloadavg()[0], "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        print(pd.DataFrame([rows[-1]]).T.to_string(header=False), flush=True)
    df = pd.DataFrame(rows)
    if args.out.exists():
        old = pd.read_csv(args.out)
        keep = ~old.set_index(["config", "device"]).index.isin(
            df.set_index(["config", "device"]).index)
        df = pd.concat([old[keep], df], ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
