"""The one exception type the CLIs turn into a single `error: ...` line and a non-zero exit."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn


class UserError(Exception):
    """Bad input from the user (file, flag, game name, checkpoint): message is one clear line."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a mistyped flag or value answered like every other bad input: one `error:`
    line (with where to read more) and exit 2, instead of the usage block first. Subcommand
    parsers are made of the same class (argparse's `add_subparsers` default)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def stdout_closed() -> int:
    """Exit status after stdout's reader went away (`train.py info | head`): no traceback.

    Python flushes stdout again at exit, so point it at /dev/null first; 141 = 128 + SIGPIPE,
    the status a shell reports for any other program cut off by `head`.
    """
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


def one_line_warnings() -> None:
    """CLIs: the project's own warnings print as one `warning: ...` line.

    Python's default format adds `file:line: Category:` and echoes the source line, two lines
    per warning; library warnings (torch, numpy) keep that format so their origin stays visible.
    """
    import warnings

    root = Path(__file__).resolve().parents[1]
    ours = {"engine", "models", "benchmarks", "play.py", "train.py"}
    default = warnings.formatwarning

    def fmt(message: Warning | str, category: type[Warning], filename: str, lineno: int,
            line: str | None = None) -> str:
        try:
            top = Path(filename).resolve().relative_to(root).parts[0]
        except (ValueError, IndexError, OSError):
            top = ""
        if top in ours and issubclass(category, UserWarning):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = fmt


def output_file(path: str) -> Path:
    """Check an output file path (--json FILE) before the work: parent created, not a directory.

    Checked up front so that a typo is an error before minutes of play or reading, not after.
    """
    target = Path(path)
    if target.is_dir():
        raise UserError(f"cannot write {target}: it is a directory")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write {target}: {err.strerror or err}") from None
    return target


def run_command(command: Callable[[], int]) -> int:
    """Run a CLI body: a UserError is one `error:` line (exit 2), Ctrl+C exits 130, a closed
    stdout pipe exits quietly. Shared by play.py and train.py."""
    try:
        code = int(command() or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return stdout_closed()
