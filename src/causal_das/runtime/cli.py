"""Shared command-line plumbing: one-line errors, logging, the flags every script has."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable

# Every script imports this before transformers (which the package imports lazily): transformers'
# weight-loading bars for these small local models are noise on the console.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class UsageError(ValueError):
    """A problem with what the user asked for; reported as one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag as one line naming the problem (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def finite_float(text: str) -> float:
    """A float flag's value; inf and nan are refused, since Adam with lr=inf or a nan threshold would
    run to the end and write garbage instead of failing."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def add_common_flags(parser: argparse.ArgumentParser, results_path: str) -> None:
    parser.add_argument("--engine", choices=("fast", "pyvene"), default="fast",
                        help="DAS engine: 'fast' (cached prefix activations, QR rotation) or 'pyvene' (the reference library)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data, networks and DAS; same seed and flags give the same results")
    parser.add_argument("--results_path", default=results_path, help="directory the result JSON, figures and saved interventions go to")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test (seconds); numbers are not meaningful")
    parser.add_argument("--verbose", action="store_true", help="log per-epoch losses")
    from causal_das.runtime.devices import add_device_flags

    add_device_flags(parser)


def compatibility_note(flag: str, why: str) -> None:
    """Says that a flag the thesis's command lines pass is accepted and changes nothing. On stdout,
    so that a bad input beside it still leaves exactly one line on stderr."""
    print(f"note: {flag} is accepted for the thesis's command line and changes nothing: {why}", flush=True)


def run_main(main: Callable[[], None]) -> None:
    """Runs a script's main; a UsageError or ValueError becomes one line on stderr and exit 2."""
    from causal_das.runtime.allocator import keep_freed_memory

    keep_freed_memory()
    try:
        main()
    except (UsageError, ValueError) as error:
        prog = sys.argv[0].rsplit("/", 1)[-1]
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished cells are saved; rerun the same command to redo the rest", file=sys.stderr)
        sys.exit(130)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
