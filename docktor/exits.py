"""How every docktor entry point reports problems and leaves the process.

One vocabulary of exit codes for `docktor`, `python -m worker` and `python -m starter`:

- 0 (EXIT_OK): done;
- 1 (EXIT_FAILED): a runtime failure (a server that cannot be reached, a check that failed, a
  loop that refused or did not answer);
- 2 (EXIT_USAGE): invalid usage or configuration: fix the command line or the file;
- 130 (EXIT_INTERRUPTED): stopped by Ctrl-C, as a shell reports SIGINT.

Problems are one line each on stderr (`error: ...`, `warning: ...`); stdout carries only what a
command produces, so it can be piped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from docktor.exit_codes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from docktor.spec import ConfigError, DocktorConfig, load_config

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE"]


T = TypeVar("T")


def error(message: object, code: int = EXIT_FAILED) -> int:
    """`error: message` on stderr; returns `code` for the caller to exit with."""
    print(f"error: {message}", file=sys.stderr)
    return code


def warn(message: object) -> None:
    print(f"warning: {message}", file=sys.stderr)


def interrupted() -> int:
    """The one line for Ctrl-C; returns EXIT_INTERRUPTED for the caller to exit with."""
    print("interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run for an entry point, where Ctrl-C always surfaces as KeyboardInterrupt.

    asyncio.run turns SIGINT into the cancellation of `main`, and into KeyboardInterrupt only
    when `main` ends cancelled; code that turns a cancellation into an error of its own (the
    Temporal SDK does, for a cancelled update call) would make Ctrl-C look like a failure. A
    second Ctrl-C, while the work winds down, leaves at once.
    """
    interrupted_at: list[bool] = []

    async def guarded() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()

        def on_sigint() -> None:
            if interrupted_at:
                leave(interrupted())
            interrupted_at.append(True)
            if task is not None:
                task.cancel()

        try:
            loop.add_signal_handler(signal.SIGINT, on_sigint)
        except (ValueError, RuntimeError):  # not the main thread: Ctrl-C is not ours to take
            return await main
        try:
            return await main
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        result = asyncio.run(guarded())
    except BaseException:
        if interrupted_at:
            raise KeyboardInterrupt from None
        raise
    if interrupted_at:
        raise KeyboardInterrupt
    return result


def report_config_error(exc: ConfigError) -> int:
    """One `error:` line per problem on stderr; the exit code for invalid configuration."""
    for problem in exc.problems:
        error(problem)
    return EXIT_USAGE


def read_config(path: str | Path | None) -> DocktorConfig:
    """load_config for an entry point: the settings the file makes that change nothing are
    reported once, as `warning:` lines. Raises ConfigError as load_config does."""
    config = load_config(path)
    for line in config.warnings:
        warn(line)
    return config


def leave(code: int) -> NoReturn:
    """Flush and exit without the interpreter's finaliser: a process that ran a Temporal worker
    can abort there (temporalio/sdk-python#300) after everything already shut down cleanly."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
