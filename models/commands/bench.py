"""(placeholder: being written)"""

import argparse


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add this module's subcommand(s) to train.py's parser."""
