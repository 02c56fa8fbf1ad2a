"""docktor/reasons.py: why something failed, in one short line that ends on a whole word."""

from __future__ import annotations

from docktor.reasons import connect_reason, first_line, shorten

# What the Temporal core client raised here for a port where nothing listens, and for a host
# name that does not resolve (temporalio 1.35).
REFUSED = (
    "Failed client connect: Server connection error: tonic::transport::Error(Transport, "
    'ConnectError(ConnectError("tcp connect error", 127.0.0.1:1, Os { code: 111, kind: '
    'ConnectionRefused, message: "Connection refused" })))'
)
NO_SUCH_HOST = (
    "Failed client connect: Server connection error: tonic::transport::Error(Transport, "
    'ConnectError(ConnectError("dns error", Custom { kind: Uncategorized, error: "failed to '
    'lookup address information: Name or service not known" })))'
)


def test_the_core_clients_connect_errors_read_as_what_happened() -> None:
    assert connect_reason(RuntimeError(REFUSED)) == "tcp connect error: Connection refused"
    assert connect_reason(RuntimeError(NO_SUCH_HOST)) == (
        "dns error: failed to lookup address information: Name or service not known"
    )


def test_other_errors_keep_their_first_line() -> None:
    assert connect_reason(OSError("no route to host\nmore detail")) == "no route to host"
    assert first_line(TimeoutError()) == "TimeoutError"


def test_a_long_reason_is_cut_at_a_word_and_says_so() -> None:
    text = "word " * 100
    cut = shorten(text, 42)
    assert len(cut) <= 42 and cut.endswith("word…")
    assert shorten("short one", 42) == "short one"
    assert shorten("a\nmulti   line\treason") == "a multi line reason"
    # One word longer than the limit is cut inside it: there is no boundary to cut at.
    assert shorten("x" * 50, 10) == "x" * 9 + "…"
