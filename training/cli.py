"""The ``latentzoo`` command line."""

from __future__ import annotations

import argparse
import logging
import sys


def _train(args: argparse.Namespace) -> None:
    from .config import load_config
    from .trainer import Trainer

    try:
        config = load_config(args.config, args.overrides)
    except ValueError as error:
        # A configuration mistake is the user's to fix: say what and how, without a traceback.
        raise SystemExit(f"error: {error}") from None
    output_dir = Trainer(config).train()
    print(f"Saved to {output_dir}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentzoo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train one config (also: accelerate launch -m latentzoo.training CONFIG ...)",
        description="Train from a YAML config or a preset name, with key=value overrides (model.KEY for the task's keys).",
    )
    train.add_argument("config", help="a YAML file or a preset name from latentzoo/configs, e.g. ddpm-mnist")
    train.add_argument("overrides", nargs="*", help="key=value overrides, e.g. seed=1 max_train_minutes=5")
    train.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    args.func(args)


if __name__ == "__main__":
    main()
