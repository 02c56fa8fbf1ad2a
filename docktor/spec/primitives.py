"""The values a docktor.yaml holds: durations, replica counts and names, their limits, and how a
value is quoted in a one-line message.

A limit is a `Limit` marker in a field's annotation, not a validator: the loader checks it on a
user's file (docktor.spec.limits), while a model built any other way is never refused for a
limit it did not have when it was written.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

# The longest duration a user's file may set. Every duration becomes a durable timer or a
# timedelta in the workflow, and one beyond what those can hold (timedelta stops at ~2.7e6
# years) would fail the loop's workflow task on every attempt instead of being refused here.
MAX_DURATION_S = 366 * 24 * 3600.0
# The most replicas a user's file may ask for: Kubernetes' int32, and it keeps every count
# within the Int (int64) search attribute DocktorReplicas.
MAX_REPLICAS = 2**31 - 1
# A name is a workflow id part, a Compose label, a DNS alias on the service's networks (so at
# most one 63-character DNS label) and a folder under state_dir.
MAX_NAME_LENGTH = 63
# A service name: a Compose service name that is also a plain file name (no '/', no '..' of
# its own, nothing a shell or a label would need quoted).
SERVICE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Compose's own rule for project names (compose-go's NormalizeProjectName / its validation).
PROJECT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")

# Values quoted in error lines: short, whatever the file holds (a long string, or a YAML alias
# that expands to an enormous nested list, must not become an enormous message).
_REPR = reprlib.Repr()
_REPR.maxstring = 80
_REPR.maxother = 80
_REPR.maxlevel = 3


def short(value: Any) -> str:
    """`value` quoted for a one-line message, cut short if it is long."""
    return _REPR.repr(value)


def format_number(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:.2f}".rstrip("0")


def parse_duration(value: Any) -> float:
    """Seconds from a number (seconds, as the Go tool wrote them) or a string like '30s', '2m'."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30, '30s' or '2m'")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"must be a finite duration, not {short(value)}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"must be a duration such as 30, '30s' or '2m', not {short(value)}")


@dataclass(frozen=True)
class Limit:
    """A rule of a user's file on one field, as annotation metadata: `problem(raw)` says what is
    wrong with the value the file wrote, or None (also for a value of the wrong type, which the
    schema reports)."""

    problem: Callable[[Any], str | None]


def _duration_problem(raw: Any) -> str | None:
    try:
        seconds = parse_duration(raw)
    except ValueError:
        return None
    if seconds > MAX_DURATION_S:
        return f"must be at most 366 days ({MAX_DURATION_S:.0f}s), not {seconds:g}s"
    return None


def _replicas_problem(raw: Any) -> str | None:
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > MAX_REPLICAS:
        return f"must be at most {MAX_REPLICAS}"
    return None


def _name_problem(raw: Any) -> str | None:
    if isinstance(raw, str) and len(raw) > MAX_NAME_LENGTH:
        return f"is {len(raw)} characters long; at most {MAX_NAME_LENGTH} are allowed"
    return None


def _project_problem(raw: Any) -> str | None:
    if not isinstance(raw, str):
        return None
    if not PROJECT_NAME_RE.fullmatch(raw) or len(raw) > MAX_NAME_LENGTH:
        return (
            f"{short(raw)} is not a valid project name: use at most {MAX_NAME_LENGTH} "
            "lowercase letters, digits, '-' or '_', starting with a letter or digit (as Compose "
            "requires)"
        )
    return None


DURATION_LIMIT = Limit(_duration_problem)
REPLICAS_LIMIT = Limit(_replicas_problem)
NAME_LIMIT = Limit(_name_problem)
PROJECT_LIMIT = Limit(_project_problem)
