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
