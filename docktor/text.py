"""Text from outside docktor made safe to print: one short printable line, no credentials.

An error message from a metric server, a plugin or a client library is not docktor's to trust:
it ends up in a decision's reason, which travels in every later workflow task (whose payloads
Temporal caps at 2 MB), in the LLM prompt, in logs and on a terminal (`docktor explain`), where
an escape sequence or a bidi override would act instead of being read. The same holds for a
model's answer, a name from a workflow payload and a YAML parser's message: every such text is
printed through printable_line, each caller with its own length.

Errors from servers and clients can also be long for a good reason (the Temporal core client
wraps the operating system's answer in several layers of Rust debug output): first_line and
connect_reason keep the part an operator acts on.
"""

from __future__ import annotations

import re

SOURCE_ERROR_LIMIT = 200
ELLIPSIS = "…"
REDACTED = "***"

# Read at most this much of a text: the line is at most `limit` characters, and a megabyte of
# error costs nothing to throw away unread. Generous, so that escape sequences and control
# characters (dropped) at the start do not leave the line empty.
_READ_AT_MOST = 8192

# Terminal escape sequences as a whole (CSI `ESC [ ... m`, OSC `ESC ] ... BEL`, two-character
# ones), so what is left reads as text rather than as `[31m` debris. Any ESC left over is
# dropped below with the other control characters.
_ESCAPE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, ended by BEL or ST
    r"|\x1b[@-Z\\-_]"  # the other two-character sequences
    r"|\x9b[0-?]*[ -/]*[@-~]"  # CSI as its one C1 character
)

# `scheme://` then the rest of the word: what stands before its last `@` is credentials
# (`user:password`, or a NATS token alone).
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>]*)")

# The Temporal core client: `ConnectError("tcp connect error", 127.0.0.1:1, Os { code: 111,
# kind: ConnectionRefused, message: "Connection refused" })`, or `ConnectError("dns error",
# Custom { kind: Uncategorized, error: "failed to lookup address information: ..." })`.
_CATEGORY = re.compile(r'ConnectError\("([^"]+)"')
_DETAIL = re.compile(r'(?:message|error): "([^"]+)"')


def printable_line(text: str, limit: int = SOURCE_ERROR_LIMIT) -> str:
    """`text` as one line of at most `limit` printable characters.

    Control characters (C0, DEL, C1), Unicode format characters (bidi overrides, zero-width
    joiners) and the other characters str.isprintable refuses are dropped, terminal escape
    sequences as a whole; every run of whitespace (newlines, tabs, U+2028) becomes one space.
    A longer line is cut, at a word boundary when one is near, and ends with an ellipsis.
    """
    read = text[:_READ_AT_MOST]
    cut = len(text) > len(read)
    read = _ESCAPE.sub("", read)
    kept = "".join(" " if ch.isspace() else ch for ch in read if ch.isspace() or ch.isprintable())
    line = " ".join(kept.split())
    if len(line) <= limit and not cut:
        return line
    room = max(0, limit - len(ELLIPSIS))
    head = line[:room]
    if len(line) > room:
        space = head.rfind(" ")
        # At a word boundary only when that loses little: a long word is cut inside it.
        if space >= room * 3 // 4:
            head = head[:space]
    return head.rstrip(" ,;:(") + ELLIPSIS


def redact(text: str) -> str:
    """Every URL in `text` without its credentials: `nats://u:***@host`, `redis://:***@host`,
    `nats://***@host` for a token. The whole text may be one URL or a message naming several."""
    return _URL.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    rest = match["rest"]
    if "@" not in rest:
        return match[0]
    # The last `@` ends the credentials: a password may hold an unescaped `@` of its own.
    userinfo, _, after = rest.rpartition("@")
    user, colon, _secret = userinfo.partition(":")
    hidden = f"{user}:{REDACTED}" if colon else REDACTED
    return f"{match['scheme']}{hidden}@{after}"


def source_error(text: str, limit: int = SOURCE_ERROR_LIMIT) -> str:
    """A metric source's error as docktor records and prints it: credentials out, one short
    printable line."""
    return printable_line(redact(text), limit)


def first_line(exc: BaseException, limit: int = SOURCE_ERROR_LIMIT) -> str:
    """The first line of an exception's message as a printable line; its type when it has
    none."""
    lines = str(exc).strip().splitlines()
    return (printable_line(lines[0], limit) if lines else "") or type(exc).__name__


def connect_reason(exc: BaseException, limit: int = SOURCE_ERROR_LIMIT) -> str:
    """Why a connection failed: `tcp connect error: Connection refused` from the Temporal core
    client's nested error, else the message's first line."""
    text = str(exc)
    detail = _DETAIL.search(text)
    if detail is None:
        return first_line(exc, limit)
    category = _CATEGORY.search(text)
    reason = f"{category.group(1)}: {detail.group(1)}" if category else detail.group(1)
    return printable_line(reason, limit)
