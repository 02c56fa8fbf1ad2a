"""When `docktor mcp` needs a bearer token, and where it takes it from: beyond loopback a token
is required, and a variable that is named but empty is no token."""

from __future__ import annotations

import pytest

from docktor.cli.mcp import http_token
from docktor.mcp.auth import is_loopback

ENV = "MCP_TOKEN"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("mcp.internal", False),
        # A name that only looks local may resolve anywhere.
        ("localhost.example.com", False),
    ],
)
def test_what_counts_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_beyond_loopback_a_token_is_required() -> None:
    token, problem = http_token("http", "0.0.0.0", None, {})
    assert token is None
    assert problem is not None and problem.startswith("--host 0.0.0.0 is beyond loopback")
    assert http_token("http", "0.0.0.0", ENV, {ENV: "s3cret-token"}) == ("s3cret-token", None)


def test_on_loopback_a_token_is_optional() -> None:
    assert http_token("http", "127.0.0.1", None, {}) == (None, None)
    assert http_token("http", "127.0.0.1", ENV, {ENV: " s3cret-token\n"}) == ("s3cret-token", None)


def test_a_named_variable_must_hold_a_token() -> None:
    for environ in ({}, {ENV: ""}, {ENV: "  \n"}):
        token, problem = http_token("http", "127.0.0.1", ENV, environ)
        assert token is None
        assert problem == f"--token-env {ENV}: the variable is not set or is empty"


def test_stdio_takes_no_token() -> None:
    assert http_token("stdio", "127.0.0.1", None, {}) == (None, None)
    token, problem = http_token("stdio", "127.0.0.1", ENV, {ENV: "s3cret-token"})
    assert token is None and problem is not None and "--transport http only" in problem
    # The token is never part of a message.
    assert "s3cret-token" not in problem
