"""docktor.text: outside text as one short printable line, URLs without their credentials, and
why something failed in a line that keeps what an operator acts on."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from docktor.text import (
    ELLIPSIS,
    connect_reason,
    first_line,
    printable_line,
    redact,
    source_error,
)


def test_escape_sequences_newlines_and_bidi_overrides_do_not_survive() -> None:
    hostile = "stream\x1b[2J\x1b[31m gone\x1b[0m\r\nnext\u202eline\u200b\x07\x9b1m\x85end\ttab"
    assert printable_line(hostile) == "stream gone nextline end tab"


def test_a_megabyte_of_error_becomes_one_short_line() -> None:
    hostile = '{"description": "' + "no such consumer \x1b[5m\n" * 60_000 + '"}'
    line = printable_line(hostile)
    assert len(line) <= 200
    assert line.endswith(ELLIPSIS)
    assert line.startswith('{"description": "no such consumer no such consumer')


def test_a_short_line_is_kept_whole_and_a_long_word_is_cut_inside() -> None:
    assert printable_line("cannot connect (timed out)") == "cannot connect (timed out)"
    assert printable_line("x" * 500, limit=50) == "x" * 49 + ELLIPSIS


def test_a_cut_ends_on_a_whole_word_when_one_is_near() -> None:
    line = printable_line("word " * 100, limit=42)
    assert line == "word " * 7 + "word" + ELLIPSIS


@given(st.text())
def test_any_text_gives_one_printable_line_within_the_limit(text: str) -> None:
    line = printable_line(text, limit=80)
    assert len(line) <= 80
    assert line.isprintable()
    assert line == line.strip() and "  " not in line


def test_urls_lose_their_credentials_and_keep_the_rest() -> None:
    assert redact("nats://alice:s3cret@nats.internal:4222") == "nats://alice:***@nats.internal:4222"
    assert redact("nats://t0ken@127.0.0.1:4222") == "nats://***@127.0.0.1:4222"
    assert redact("redis://:pw@redis:6379/0") == "redis://:***@redis:6379/0"
    # A password with an unescaped '@' of its own is hidden whole.
    assert (
        redact("nats://u:p@ss@host:4222: cannot connect")
        == "nats://u:***@host:4222: cannot connect"
    )
    assert (
        redact("http://127.0.0.1:7233 and nats://h:4222")
        == "http://127.0.0.1:7233 and nats://h:4222"
    )


def test_every_url_in_a_message_is_redacted() -> None:
    text = "nats://a:one@h1:4222: error from 'redis://:two@h2/0' (retrying nats://three@h3)"
    redacted = redact(text)
    assert not {"one", "two", "three"} & set(redacted.replace("@", " ").split())
    assert redacted.count("***") == 3


def test_a_source_error_is_redacted_before_it_is_cut() -> None:
    # Cut first, the password before the '@' would be left without the '@' that marks it.
    line = source_error("nats://user:" + "p" * 300 + "@host:4222: cannot connect", limit=40)
    assert "ppp" not in line


# ---- why something failed -----------------------------------------------------------------------

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


def test_an_errors_control_characters_do_not_reach_its_reason() -> None:
    # A server's answer quoted in an exception, as a dockerd or a plugin may raise it.
    assert first_line(OSError("\x1b]0;pwned\x07disk\x1b[31m gone\u202e\nmore")) == "disk gone"
    assert connect_reason(RuntimeError('error: "refused\x1b[2J\x07 here"')) == "refused here"
    # Nothing printable left: the exception's type says what happened.
    assert first_line(ValueError("\x1b[2J\x07")) == "ValueError"
