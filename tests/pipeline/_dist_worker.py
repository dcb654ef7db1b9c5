"""Run by tests/pipeline/test_knn_bank.py under ``torchrun --nproc_per_node 2`` (gloo, CPU).

argv: checkpoint, work dir. Both CLI commands run inside the group torchrun set up; rank 0 writes
the k-NN results into the work dir.
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dinoeval.cli import app
from dinoeval.eval.knn_ooc import fixed_bytes
from dinoeval.pipeline.knn_bank import knn_classify_distributed


def main() -> None:
    ckpt, work = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    cache = str(work / "cache")
    app(["extract-sharded", "--ckpt", ckpt, "--data", "digits:test[:37]", "--cache-dir", cache,
         "--img-size", "16", "--batch-size", "8"], standalone_mode=False)
    # distributed k-NN on the merged cache, through the CLI
    app(["knn-bank", "--train-feats", cache, "--val-feats", cache, "--k", "5",
         "--max-memory", "16GB", "--out", str(work / "cli.csv")], standalone_mode=False)
    data = np.load(work / "knn.npz")
    # the bank file is shared; rank 1 passes no queries (they are broadcast from rank 0)
    res = knn_classify_distributed(work / "bank.npy", data["ty"],
                                   data["qx"] if rank == 0 else None,
                                   data["qy"] if rank == 0 else None, ks=(1, 5, 20),
                                   max_memory=fixed_bytes(60, 16, 20) + 200 * 16 * 8)
    np.save(work / f"pred{rank}.npy", np.stack([res.predictions[k] for k in (1, 5, 20)]))
    # Both ranks finish their collectives before either tears gloo down (a rank leaving early
    # made its peer abort with "terminate called without an active exception").
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
