#!/usr/bin/env python
"""Neural Arcade data and training tool: collect, import, info, fit, eval, bench.

Each subcommand lives in its own module (engine/commands, models/commands) exposing
`register(subparsers)`; this file only wires them together.
"""

from __future__ import annotations

import argparse
import os
import sys

from engine.commands import collect, data_io
from engine.errors import ArgumentParser, one_line_warnings, run_command
from models.commands import bench, fit
from models.commands import eval as evaluate

EPILOG = """\
typical session:
  python train.py collect --game breakout --policy scripted --episodes 50 --out data/breakout
  python train.py info --data data/breakout
  python train.py fit --config assets/configs/breakout-diffusion.yaml --data data/breakout --out runs/bk
  python train.py eval --checkpoint runs/bk --data data/breakout --json eval.json
  python train.py bench --checkpoint runs/bk --json bench.json
  python play.py --checkpoint runs/bk
"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="train.py", description=__doc__.splitlines()[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (collect, data_io, fit, evaluate, bench):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # eval's PNGs import pygame
    one_line_warnings()
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
