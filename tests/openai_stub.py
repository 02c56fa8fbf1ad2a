"""A real HTTP server that speaks enough of the OpenAI API for the advisor and the CLI.

It listens on a free 127.0.0.1 port in a background thread (http.server, no extra packages), so
the code under test goes through the real `openai` client, real sockets and real timeouts:

- GET  /v1/models            the ids in `stub.models` (or `stub.models_status` as an HTTP error)
- POST /v1/chat/completions  the next scripted Reply from `stub.replies`, in order

Every request is recorded (method, path, headers, JSON body) so tests can assert the prompt and
the Authorization header. A slow reply waits on an Event, not a plain sleep, so stopping the
stub releases it at once. A huge reply (`Reply.huge`) is streamed, and the stub counts in
`stub.sent` the bytes it managed to write before the client hung up.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer to a chat completion."""

    content: str | None = None
    status: int = 200
    error: str = ""
    delay: float = 0.0
    # A huge reply: this many bytes of filler inside the message content, streamed; chunked
    # (no Content-Length, as a server that generates without end) or with its full length.
    filler: int = 0
    chunked: bool = True
    # Sent gzip-compressed (Content-Encoding: gzip), whatever the client asked for.
    gzip: bool = False

    @classmethod
    def json(cls, data: Any, delay: float = 0.0) -> Reply:
        return cls(content=json.dumps(data), delay=delay)

    @classmethod
    def text(cls, text: str) -> Reply:
        return cls(content=text)

    @classmethod
    def http_error(cls, status: int, message: str = "scripted failure") -> Reply:
        return cls(status=status, error=message)

    @classmethod
    def huge(cls, size: int, chunked: bool = True, status: int = 200) -> Reply:
        return cls(status=status, filler=size, chunked=chunked)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any = None
    peer: int = 0  # the client's port: requests on one kept connection share it


@dataclass
class OpenAIStub:
    models: list[str] = field(default_factory=lambda: ["ai/granite-4.0-h-micro", "ai/smollm2"])
    # An HTTP status for GET /models instead of the list (e.g. 401, 500).
    models_status: int | None = None
    # A server (like some llama.cpp builds) that refuses `response_format` with a 400.
    reject_response_format: bool = False
    replies: deque[Reply] = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)
    # For each huge reply, the bytes written before the client closed (or all of them).
    sent: list[int] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _released: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def chat_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def start(self) -> None:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep pytest output clean

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                stub._record(self, None)
                if self.path.rstrip("/") != "/v1/models":
                    self._send(404, _error("no such endpoint"))
                elif stub.models_status is not None:
                    self._send(stub.models_status, _error("scripted failure"))
                else:
                    data = [
                        {"id": m, "object": "model", "created": 0, "owned_by": "stub"}
                        for m in stub.models
                    ]
                    self._send(200, {"object": "list", "data": data})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                stub._record(self, body)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, _error("no such endpoint"))
                    return
                if stub.reject_response_format and "response_format" in body:
                    self._send(400, _error("'response_format' is not supported", "invalid"))
                    return
                with stub._lock:
                    reply = stub.replies.popleft() if stub.replies else None
                if reply is None:
                    self._send(500, _error("the test scripted no reply for this request"))
                    return
                if reply.delay and stub._released.wait(reply.delay):
                    return  # the stub is stopping
                if reply.filler:
                    self._stream_huge(reply, body)
                    return
                if reply.status != 200:
                    self._send(reply.status, _error(reply.error))
                    return
                model = body.get("model", "") if isinstance(body, dict) else ""
                self._send(200, _completion(model, reply.content or ""), reply.gzip)

            def _stream_huge(self, reply: Reply, body: Any) -> None:
                """A completion whose content is `reply.filler` bytes of "x", written in 64 KiB
                pieces until done or until the client hangs up; the bytes written go in
                `stub.sent`. The kernel's socket buffers take some after the client stops
                reading, so a client that stops early still gets a few MB counted."""
                model = body.get("model", "") if isinstance(body, dict) else ""
                marker = "FILLER-GOES-HERE"
                whole = _completion(model, marker) if reply.status == 200 else _error(marker)
                head, tail = (part.encode() for part in json.dumps(whole).split(marker))
                length = len(head) + reply.filler + len(tail)
                written = 0
                piece = b"x" * 65536

                def write(data: bytes) -> None:
                    nonlocal written
                    if reply.chunked:
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    else:
                        self.wfile.write(data)
                    written += len(data)

                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    if reply.chunked:
                        self.send_header("Transfer-Encoding", "chunked")
                    else:
                        self.send_header("Content-Length", str(length))
                    self.end_headers()
                    write(head)
                    left = reply.filler
                    while left > 0 and not stub._released.is_set():
                        write(piece[: min(left, len(piece))])
                        left -= min(left, len(piece))
                    write(tail)
                    if reply.chunked:
                        self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                finally:
                    with stub._lock:
                        stub.sent.append(written)

            def _send(self, status: int, payload: Any, compress: bool = False) -> None:
                data = json.dumps(payload).encode()
                if compress:
                    data = gzip.compress(data)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    if compress:
                        self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        threading.Thread(target=server.serve_forever, name="openai-stub", daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.replies.clear()
            self.requests.clear()
            self.sent.clear()
        self.models = ["ai/granite-4.0-h-micro", "ai/smollm2"]
        self.models_status = None
        self.reject_response_format = False

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _record(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.requests.append(
                Recorded(handler.command, handler.path, headers, body, handler.client_address[1])
            )


def _error(message: str, code: str = "server_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": code, "param": None, "code": code}}


def _completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


@contextmanager
def running_stub() -> Iterator[OpenAIStub]:
    stub = OpenAIStub()
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()
