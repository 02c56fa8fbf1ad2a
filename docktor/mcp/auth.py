"""The HTTP transport's bearer token: one shared secret that every request must carry.

A static token, not OAuth: `docktor mcp` is an operator's tool that an agent's host reaches
with a header it is configured with (`Authorization: Bearer <token>`). The check wraps the
whole ASGI app, so a request without the token is answered 401 before the MCP session layer,
and so any tool, sees it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json

from starlette.types import ASGIApp, Receive, Scope, Send

# Names that always mean this machine; an IP address is judged by ipaddress (127.0.0.0/8, ::1).
LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps the server to this machine. A name other than
    localhost may resolve anywhere, so it counts as beyond loopback."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class RequireBearerToken:
    """ASGI middleware: an HTTP request passes only with `Authorization: Bearer <token>`.

    The comparison is of SHA-256 digests with hmac.compare_digest: constant time in the
    token's content and, since both digests have one length, in its length too. Nothing here
    logs a header; the server's access log records the request line and the 401 only."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        if not token:
            raise ValueError("an empty token would let anyone in")
        self.app = app
        self._digest = _digest(token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Lifespan events (the session manager's start and stop) are the server's own.
        if scope["type"] == "http" and not self._authorised(scope):
            await _unauthorised(send)
            return
        await self.app(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = credentials.strip()
                break
        # Compare even when nothing was given, so a missing header takes as long as a wrong one.
        return hmac.compare_digest(_digest(given), self._digest) and bool(given)


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


async def _unauthorised(send: Send) -> None:
    body = json.dumps(
        {"error": "unauthorized", "error_description": "a valid bearer token is required"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="docktor mcp"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
