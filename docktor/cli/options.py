"""Options every docktor command that reads a config shares."""

from __future__ import annotations

import argparse

from docktor.spec import default_config_path


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help=f"the docktor.yaml to use (default: $DOCKTOR_CONFIG or {default_config_path()})",
    )


def positive_seconds(text: str) -> float:
    """An argparse type for --timeout: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: '{text}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text}")
    return value
