"""Run by tests/scale/test_distributed.py under ``torchrun --nproc_per_node 2`` (gloo, CPU).

argv: checkpoint, work dir. Writes rank-0 results into the work dir as .npy files.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dinoeval.cli import app
from dinoeval.eval.knn_ooc import fixed_bytes, knn_classify_distributed
from dinoeval.features.sharded import extract_sharded
from dinoeval.models import load_backbone
from tests.conftest import make_source


def main() -> None:
    ckpt, work = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    fs = extract_sharded(load_backbone(ckpt), make_source(n=37), cache_dir=work / "cache",
                         batch_size=8)
    data = np.load(work / "knn.npz")
    # the bank file is shared; rank 1 passes no queries (they are broadcast from rank 0)
    res = knn_classify_distributed(work / "bank.npy", data["ty"],
                                   data["qx"] if rank == 0 else None,
                                   data["qy"] if rank == 0 else None, ks=(1, 5, 20),
                                   max_memory=fixed_bytes(60, 16, 20) + 200 * 16 * 8)  # 200-row blocks
    # the CLI inside the same torchrun group: distributed k-NN on the merged cache
    app(["knn-bank", "--train-feats", str(work / "cache"), "--val-feats", str(work / "cache"),
         "--k", "5", "--max-memory", "16GB", "--out", str(work / "cli.csv")],
        standalone_mode=False)
    np.save(work / f"feats{rank}.npy", np.asarray(fs.features))
    np.save(work / f"pred{rank}.npy", np.stack([res.predictions[k] for k in (1, 5, 20)]))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
