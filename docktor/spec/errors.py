"""How a problem of a docktor.yaml is said: one line, the field's path first, a suggestion for a
typo."""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import BaseModel

from docktor.spec.primitives import short
from docktor.spec.schema import LOADER_FIELDS, DocktorConfig, ServiceSpec, inner_model
from docktor.text import printable_line

# A problem's line: far more than any message docktor writes, yet what a hostile file or a
# parser quotes in it cannot make it a page.
PROBLEM_MAX_CHARS = 1000


class ConfigError(Exception):
    """A config that cannot be used; `problems` holds one line per fault, field path first."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def one_line(text: str) -> str:
    """A problem as one printable line: a YAML parser's message or a value quoted in it may
    hold newlines and control characters."""
    return printable_line(text, PROBLEM_MAX_CHARS)


def describe(error: Any, model: type[BaseModel], prefix: tuple[Any, ...] = ()) -> str:
    """One of pydantic's errors of validating `model`, as a line; `prefix` is where the model
    sits in the file (a `queue:` block validated by its kind's model)."""
    loc = error["loc"]
    message = str(error["msg"]).removeprefix("Value error, ").replace("Input should be", "must be")
    kind = error["type"]
    if kind == "extra_forbidden":
        message = "unknown field" + _suggest(loc, model)
    elif kind == "missing":
        message = "required field is missing"
    elif kind == "literal_error":
        message = f"must be one of {error['ctx']['expected']}, not {error['input']!r}"
    elif kind == "string_pattern_mismatch":
        message = (
            f"{short(error['input'])} is not a valid name: use letters, digits, '-', '_' or "
            "'.', starting with a letter or digit" + _lookalike(error["input"])
        )
    elif kind == "too_short" and loc and loc[-1] == "services":
        message = "must list at least one service"
    elif kind == "finite_number":
        message = f"must be a finite number, not {short(error['input'])}"
    elif kind.endswith("_type") or kind.endswith("_parsing"):
        message = f"{message}, got {short(error['input'])}"
    return at((*prefix, *loc), message)


def at(loc: tuple[Any, ...], message: str) -> str:
    """`path: message` on one line, whatever a value or a message quoted. A check across a
    service's fields names its field first (`command: required when ...`): that field joins the
    path."""
    message = one_line(message)
    where = path(loc)
    if not where:
        return message
    field = message.split(":", 1)[0]
    if ": " in message and field in ServiceSpec.model_fields:
        return f"{where}.{message}"
    return f"{where}: {message}"


def _lookalike(value: Any) -> str:
    """Names a non-ASCII character, which may look exactly like an ASCII one ('а', U+0430)."""
    for char in str(value):
        if not char.isascii():
            return f" (it has the non-ASCII character {char!r}, U+{ord(char):04X})"
    return ""


_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_.-]+")
_VALIDATOR_STEP_RE = re.compile(r"function-(after|before|wrap|plain)\[")


def path(loc: tuple[Any, ...]) -> str:
    """`services[0].queue.stream` for a location in the file."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _VALIDATOR_STEP_RE.match(str(part)):
            # pydantic's name for a validator step (`function-after[check(), Spec]`), not a key.
            continue
        elif _PLAIN_KEY_RE.fullmatch(str(part)):
            out += f".{part}" if out else str(part)
        else:
            # A key with spaces, brackets, newlines...: quoted, so the path stays one line and
            # says exactly which key.
            out += f"[{short(str(part))}]"
    return out


def _suggest(loc: tuple[Any, ...], model: type[BaseModel]) -> str:
    """'(did you mean min_replicas?)' for a typo, by walking the models along the path."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or _VALIDATOR_STEP_RE.match(str(part)):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return ""
        current = inner_model(field.annotation)
        if current is None:
            return ""
    known = list(getattr(current, "model_fields", {}))
    known = [k for k in known if k not in LOADER_FIELDS or current is DocktorConfig]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def service_order(line: str) -> tuple[int, int]:
    """The file's settings first, then each service's problems in the order of the services."""
    match = re.match(r"services\[(\d+)\]", line)
    return (1, int(match.group(1))) if match else (0, 0)
