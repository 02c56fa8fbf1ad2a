"""The worker's health probes: `/healthz` (the process runs) and `/readyz` (connected to
Temporal and polling its task queue), for an orchestrator's liveness and readiness checks.

Readiness is asked of Temporal itself, on each probe: the task queue's pollers, as the server
sees them, must include this worker. That one call fails while Temporal cannot be reached, and
finds no poller while the worker is not polling, so it answers both halves of the question.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

log = logging.getLogger("docktor.worker")

# A probe that waits longer than this answers 503: an orchestrator's own timeout is often 1 s
# to a few, and a slow answer is no better than none.
PROBE_TIMEOUT_S = 2.0


class PortUnavailable(Exception):
    """--health-port cannot be bound (taken, or not ours to use)."""


async def polling(client: Client, task_queue: str) -> str | None:
    """None when Temporal answers and lists this client's identity among the workflow pollers
    of `task_queue`; otherwise why not, in a few words."""
    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            timeout=timedelta(seconds=PROBE_TIMEOUT_S),
        )
    except Exception as exc:  # RPCError, or the core's connection errors
        return f"Temporal not answering: {type(exc).__name__}"
    if not any(p.identity == client.identity for p in response.pollers):
        return f"not polling task queue '{task_queue}'"
    return None


class HealthServer:
    """Serves the probes from a thread; readiness runs `check` on the worker's event loop."""

    def __init__(self, host: str, port: int) -> None:
        self._check: Callable[[], Awaitable[str | None]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            self._server = ThreadingHTTPServer((host, port), self._handler())
        except OSError as exc:
            raise PortUnavailable(
                f"cannot serve health probes on {host}:{port} ({exc.strerror or exc})"
            ) from None
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def ready_when(self, check: Callable[[], Awaitable[str | None]]) -> None:
        """From now on /readyz asks `check` (None: ready), on the calling event loop."""
        self._loop = asyncio.get_running_loop()
        self._check = check

    def not_ready(self) -> None:
        """Shutting down: no new work should be routed here."""
        self._check = None

    def readiness(self) -> str | None:
        check, loop = self._check, self._loop
        if check is None or loop is None:
            return "not connected to Temporal yet"
        future = asyncio.run_coroutine_threadsafe(check(), loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout=PROBE_TIMEOUT_S + 1)
        except Exception as exc:
            future.cancel()
            return f"readiness check failed: {type(exc).__name__}"

    def start(self) -> HealthServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="docktor-health", daemon=True
        )
        self._thread.start()
        log.info("health probes on %s/healthz and /readyz", self.url)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._answer(200, "ok")
                elif path == "/readyz":
                    problem = server.readiness()
                    self._answer(503 if problem else 200, problem or "ready")
                else:
                    self._answer(404, "not found: /healthz or /readyz")

            def _answer(self, status: int, text: str) -> None:
                body = f"{text}\n".encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # a probe every few seconds is not news

        return Handler
