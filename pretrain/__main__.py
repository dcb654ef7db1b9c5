"""``python -m pretrain ...`` (what ``torchrun ... -m pretrain`` runs): the ``dinoeval pretrain``
command on its own."""

import typer

from dinoeval.cli.pretrain import pretrain


def main() -> None:
    typer.run(pretrain)


if __name__ == "__main__":
    main()
