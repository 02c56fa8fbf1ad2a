"""Why something failed, in one short line that ends on a whole word.

Errors from servers and clients can be long (the Temporal core client wraps the operating
system's answer in several layers of Rust debug output); a message docktor prints keeps the part
an operator acts on and never stops mid-word.
"""

from __future__ import annotations

import re

MAX_REASON = 200
ELLIPSIS = "…"

# The Temporal core client: `ConnectError("tcp connect error", 127.0.0.1:1, Os { code: 111,
# kind: ConnectionRefused, message: "Connection refused" })`, or `ConnectError("dns error",
# Custom { kind: Uncategorized, error: "failed to lookup address information: ..." })`.
_CATEGORY = re.compile(r'ConnectError\("([^"]+)"')
_DETAIL = re.compile(r'(?:message|error): "([^"]+)"')


def shorten(text: str, limit: int = MAX_REASON) -> str:
    """One line of at most `limit` characters, cut at a word boundary, marked when cut."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit - len(ELLIPSIS)]
    if " " in cut:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(",;:(") + ELLIPSIS


def first_line(exc: BaseException, limit: int = MAX_REASON) -> str:
    """The first line of an exception's message, shortened; its type when it has none."""
    lines = str(exc).strip().splitlines()
    return shorten(lines[0], limit) if lines else type(exc).__name__


def connect_reason(exc: BaseException, limit: int = MAX_REASON) -> str:
    """Why a connection failed: `tcp connect error: Connection refused` from the Temporal core
    client's nested error, else the message's first line."""
    text = str(exc)
    detail = _DETAIL.search(text)
    if detail is None:
        return first_line(exc, limit)
    category = _CATEGORY.search(text)
    reason = f"{category.group(1)}: {detail.group(1)}" if category else detail.group(1)
    return shorten(reason, limit)
