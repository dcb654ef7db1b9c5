"""Soak test of a shared lab: many concurrent commands on one feature cache and one results table.

``--procs`` workers (default 16) each run a random mix of ``knn``, ``linear``, ``extract`` and
``knn-bank`` commands (real ``dinoeval`` CLI processes) for ``--seconds``, all with the same
``--cache-dir`` and the same ``--out`` table. Inputs are tiny (a width-32 depth-1 ViT on subsets of
scikit-learn's digits) so the run measures the shared files, not the models.

Every knn/linear/knn-bank invocation uses its own copy of the checkpoint file (same bytes, so the
cache is shared; a different path, so its rows are recognisable by their ``backbone`` column;
knn-bank gets it as ``--ckpt``, which names its rows whoever extracted the shared entries). At the
end:

* every row each process reported ("appended N rows") is in the table exactly once: per
  knn/linear/knn-bank invocation the rows with its backbone path number exactly N, and no row
  names another path;
* the config sidecar holds exactly one entry per command that appended rows;
* every cache entry is readable (meta.json complete, the three arrays load with equal lengths)
  and no temporary folder of a finished writer is left.

Usage::

    python benchmarks/soak.py --seconds 180 --procs 16 --work /tmp/soak [--md results/soak.md]

Exit code 0 when every check holds; the numbers are printed (and written as markdown with --md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

COMMANDS = ("knn", "linear", "extract", "knn-bank")
APPENDED = re.compile(r"appended (\d+) rows? to")


def make_checkpoint(path: Path) -> None:
    import timm
    import torch

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=8, patch_size=4,
                            embed_dim=32, depth=1, num_heads=2, num_classes=0)
    torch.save(net.state_dict(), path)


def command(kind: str, rng: random.Random, ckpt: Path, cache: Path, table: Path) -> list[str]:
    n_train, n_val = rng.choice((120, 160, 200)), rng.choice((40, 60))
    train, val = f"digits:train[:{n_train}]", f"digits:test[:{n_val}]"
    base = ["--ckpt", str(ckpt), "--batch-size", "64"]
    if kind == "knn":
        return ["knn", *base, "--train", train, "--val", val, "--k", "5", "--k", "10",
                "--cache-dir", str(cache), "--out", str(table)]
    if kind == "linear":
        return ["linear", *base, "--train", train, "--val", val, "--epochs", "2", "--lr", "0.01",
                "--wd", "0", "--cache-dir", str(cache), "--out", str(table)]
    if kind == "extract":
        return ["extract", *base, "--data", rng.choice((train, val)), "--cache-dir", str(cache)]
    return ["knn-bank", "--train-feats", "{train}", "--val-feats", "{val}", "--k", "5",
            "--ckpt", str(ckpt), "--out", str(table)]


def pick_banks(cache: Path, rng: random.Random) -> tuple[Path, Path] | None:
    """Two complete entries of the same backbone and feature width: a train and a test subset."""
    entries = []
    for d in (cache.iterdir() if cache.is_dir() else ()):
        try:
            meta = json.loads((d / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        entries.append((d, meta))
    train = [d for d, m in entries if ":train" in str(m.get("source", m.get("spec", d.name)))]
    test = [d for d, m in entries if ":test" in str(m.get("source", m.get("spec", d.name)))]
    if not train or not test:
        return None
    return rng.choice(train), rng.choice(test)


def worker(wid: int, deadline: float, args: argparse.Namespace, work: Path) -> list[dict]:
    rng = random.Random(wid)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done: list[dict] = []
    i = 0
    while time.monotonic() < deadline:
        kind = COMMANDS[(wid + i) % len(COMMANDS)] if i < len(COMMANDS) else rng.choice(COMMANDS)
        ckpt = work / "ckpts" / f"w{wid:02d}-{i:03d}.pth"
        shutil.copyfile(work / "tiny.pth", ckpt)
        argv = command(kind, rng, ckpt, work / "cache", work / "table.csv")
        if kind == "knn-bank":
            banks = pick_banks(work / "cache", rng)
            if banks is None:
                kind = "extract"
                argv = command(kind, rng, ckpt, work / "cache", work / "table.csv")
            else:
                argv = [a.format(train=banks[0], val=banks[1]) for a in argv]
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-c", "from dinoeval.cli import main; main()", *argv],
                           capture_output=True,
                           text=True, env={**env, "COLUMNS": "200"})
        found = APPENDED.search(r.stdout + r.stderr)
        done.append({"worker": wid, "kind": kind, "ckpt": str(ckpt), "rc": r.returncode,
                     "seconds": time.monotonic() - t0,
                     "appended": int(found.group(1)) if found else 0,
                     "error": "" if r.returncode == 0 else (r.stderr or r.stdout)[-400:]})
        i += 1
    return done


def check_cache(cache: Path) -> tuple[int, list[str]]:
    bad, n = [], 0
    for d in sorted(cache.iterdir()):
        if d.name.startswith(".tmp-"):
            bad.append(f"leftover temporary folder {d.name}")
            continue
        if not d.is_dir() or d.name.endswith(".shards"):
            continue
        n += 1
        try:
            meta = json.loads((d / "meta.json").read_text())
            lens = {len(np.load(d / f"{a}.npy", mmap_mode="r")) for a in
                    ("features", "labels", "indices")}
            if not meta.get("complete") or len(lens) != 1:
                bad.append(f"{d.name}: incomplete or mismatched")
        except Exception as err:  # any damage is a finding
            bad.append(f"{d.name}: {type(err).__name__}: {err}")
    return n, bad


def check_table(work: Path, runs: list[dict]) -> tuple[int, list[str]]:
    import pandas as pd

    from dinoeval.results import read_results

    if not (work / "table.csv").exists():
        return 0, ["no results table was written"]
    table = read_results(work / "table.csv")
    problems = []
    by_backbone = table.groupby("backbone").size().to_dict()
    own = {r["ckpt"]: r for r in runs if r["kind"] in ("knn", "linear", "knn-bank")
           and r["rc"] == 0}
    for ckpt, r in own.items():
        if by_backbone.get(ckpt, 0) != r["appended"]:
            problems.append(f"{r['kind']} {ckpt}: reported {r['appended']} rows, table has "
                            f"{by_backbone.get(ckpt, 0)}")
    stray = {k: v for k, v in by_backbone.items() if k not in own}
    if stray:
        problems.append(f"{sum(stray.values())} rows name no checkpoint of a run that appended "
                        f"them: {', '.join(sorted(stray))[:200]}")
    sidecar = json.loads((work / "table.csv.config.json").read_text())["runs"]
    appenders = sum(1 for r in runs if r["rc"] == 0 and r["appended"])
    if len(sidecar) != appenders:
        problems.append(f"config sidecar has {len(sidecar)} entries for {appenders} commands "
                        "that appended rows")
    assert isinstance(table, pd.DataFrame)
    return len(table), problems


def markdown(args: argparse.Namespace, runs: list[dict], wall: float, rows: int,
             entries: int, problems: list[str]) -> str:
    lines = [
        "# Soak: concurrent commands on one cache and one results table",
        "",
        f"`python benchmarks/soak.py --seconds {args.seconds} --procs {args.procs}` on this "
        f"machine ({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"- wall time: {wall:.0f} s; commands run: {len(runs)}; failed: "
        f"{sum(r['rc'] != 0 for r in runs)}",
        f"- rows in the table: {rows} (reported appended: {sum(r['appended'] for r in runs)})",
        f"- cache entries: {entries}, all readable: "
        f"{'no' if any(p.startswith('cache') for p in problems) else 'yes'}",
        f"- checks: {'all passed' if not problems else '; '.join(problems)}",
        "",
        "| command | runs | failed | rows appended | median s | max s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind in COMMANDS:
        rs = [r for r in runs if r["kind"] == kind]
        if rs:
            secs = sorted(r["seconds"] for r in rs)
            lines.append(f"| {kind} | {len(rs)} | {sum(r['rc'] != 0 for r in rs)} | "
                         f"{sum(r['appended'] for r in rs)} | {secs[len(secs) // 2]:.1f} | "
                         f"{secs[-1]:.1f} |")
    errors = sorted({r["error"].strip().splitlines()[-1] for r in runs if r["rc"] != 0
                     and r["error"].strip()})
    if errors:
        lines += ["", "Errors seen:", "", *[f"- `{e}`" for e in errors]]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--procs", type=int, default=16)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dinoeval-soak"))
    ap.add_argument("--md", type=Path, default=None)
    args = ap.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    (work / "ckpts").mkdir(parents=True)
    (work / "cache").mkdir()
    make_checkpoint(work / "tiny.pth")
    t0 = time.monotonic()
    deadline = t0 + args.seconds
    with ThreadPoolExecutor(args.procs) as pool:
        futures = [pool.submit(worker, w, deadline, args, work) for w in range(args.procs)]
        runs = [r for f in futures for r in f.result()]
    wall = time.monotonic() - t0
    entries, cache_bad = check_cache(work / "cache")
    rows, table_bad = check_table(work, runs)
    problems = [f"cache: {p}" for p in cache_bad] + table_bad
    text = markdown(args, runs, wall, rows, entries, problems)
    print(text)
    if args.md:
        args.md.write_text(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
