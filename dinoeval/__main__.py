"""``python -m dinoeval COMMAND ...``: the one entry point, also what ``torchrun`` launches::

    torchrun --nproc-per-node 8 -m dinoeval pretrain --data imagefolder:/data/train ...
    torchrun --nproc-per-node 8 -m dinoeval extract-sharded --ckpt dino.pth ...
"""

from dinoeval.cli import main

if __name__ == "__main__":
    main()
