"""How every docktor entry point reports a bad config and leaves the process."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from docktor.config import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def report_config_error(exc: ConfigError) -> int:
    """One `error:` line per problem on stderr; the exit code for invalid configuration."""
    for problem in exc.problems:
        print(f"error: {problem}", file=sys.stderr)
    return EXIT_USAGE


def leave(code: int) -> NoReturn:
    """Flush and exit without the interpreter's finaliser: a process that ran a Temporal worker
    can abort there (temporalio/sdk-python#300) after everything already shut down cleanly."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
