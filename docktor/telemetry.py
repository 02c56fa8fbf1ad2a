"""docktor's own Prometheus metrics, and the worker's `/metrics` endpoint.

The activities report what they see here (replica counts, decisions, failed metric reads, the
model's latency and fallbacks), per service. The endpoint serves docktor's registry followed by
the Temporal SDK's own metrics, which the SDK's core (in Rust) serves on a private local port:
one scrape target per worker instead of two.

Nothing here knows Temporal exists; the worker hands in the SDK's local URL.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from docktor.journal import decision_key
from docktor.values import Decision, Observation

log = logging.getLogger("docktor.telemetry")

# Model calls take from tens of milliseconds (a small local model) to tens of seconds (a big
# remote one at a bad moment); the default buckets stop at 10 s.
LLM_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
# A source that could not be named from its error line (it should not happen).
# Decision ids remembered so that one decided again counts once; far more than a retry window.
COUNTED_KEYS = 20_000
UNKNOWN_SOURCE = "unknown"
# Failing to count replicas is a failed read too, of the backend rather than of a metric source.
SCALER_SOURCE = "scaler"


class DocktorMetrics:
    """The figures of every loop this worker runs, in a registry of their own (not the
    process-wide default), so a test can hold a fresh set and nothing else leaks in."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        # Decision ids this process has counted: a decision decided again after its workflow
        # task failed is written again under its id, and is still one decision.
        self._counted: OrderedDict[str, None] = OrderedDict()
        self.replicas = Gauge(
            "docktor_replicas",
            "Replicas the service runs, as last counted or applied.",
            ["service"],
            registry=self.registry,
        )
        self.desired_replicas = Gauge(
            "docktor_desired_replicas",
            "Replicas the latest decision (or the scale in progress) aims for.",
            ["service"],
            registry=self.registry,
        )
        # The loop's bounds and pace, so a rule can say "pinned at max" or "late" without
        # knowing each service's config.
        self.max_replicas = Gauge(
            "docktor_max_replicas",
            "The service's max_replicas, as its loop last observed with.",
            ["service"],
            registry=self.registry,
        )
        self.check_interval = Gauge(
            "docktor_check_interval_seconds",
            "The loop's time between iterations (its check_interval).",
            ["service"],
            registry=self.registry,
        )
        # A counter cannot tell a loop that stopped deciding from one an operator stopped, nor
        # say how long ago the last decision was: this can, and goes away with the loop.
        self.last_decision = Gauge(
            "docktor_last_decision_timestamp_seconds",
            "When the loop last recorded a decision (Unix time); gone once the loop is stopped.",
            ["service"],
            registry=self.registry,
        )
        self.decisions = Counter(
            "docktor_decisions",
            "Decisions recorded, by action (counted once each, however often recording retried or "
            "a decision was decided again after its workflow task failed).",
            ["service", "action"],
            registry=self.registry,
        )
        self.fetch_failures = Counter(
            "docktor_metric_fetch_failures",
            "Observations in which a metric source (or the scaler's replica count) failed.",
            ["service", "source"],
            registry=self.registry,
        )
        self.llm_latency = Histogram(
            "docktor_llm_latency_seconds",
            "Time the model took to advise a decision (fallbacks included).",
            ["service"],
            buckets=LLM_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.llm_fallbacks = Counter(
            "docktor_llm_fallbacks",
            "Decisions where the model's advice could not be used and the rules decided.",
            ["service"],
            registry=self.registry,
        )

    # ---- what the activities report ---------------------------------------------------------

    def planned(self, service: str, max_replicas: int, check_interval: float) -> None:
        """The plan a loop observes with: its bounds and pace may change with an update."""
        self.max_replicas.labels(service=service).set(max_replicas)
        self.check_interval.labels(service=service).set(check_interval)

    def observed(self, service: str, observation: Observation, kinds: Iterable[str]) -> None:
        """One observation: its replica count, and one failure per source that could not be
        read (`kinds` are the service's source kinds, to name the source of each error)."""
        self.replicas.labels(service=service).set(observation.replicas)
        known = list(kinds)
        # Each source's failure counter exists from the first observation at 0, so the first
        # failure is an increase a rule sees (a series that appears at 1 shows none).
        for kind in (*known, SCALER_SOURCE):
            self.fetch_failures.labels(service=service, source=kind)
        for error in observation.errors:
            self.fetch_failures.labels(service=service, source=_source_of(error, known)).inc()

    def replicas_unavailable(self, service: str) -> None:
        self.fetch_failures.labels(service=service, source=SCALER_SOURCE).inc()

    def applying(self, service: str, target: int) -> None:
        self.desired_replicas.labels(service=service).set(target)

    def applied(self, service: str, replicas: int) -> None:
        self.replicas.labels(service=service).set(replicas)

    def recorded(self, decision: Decision, written: bool) -> None:
        """A decision reached the record activity. The gauges follow every call (setting them
        again is harmless); the counters only move when the journal wrote the line, so a retried
        record activity never counts one decision twice."""
        service = decision.service
        # The workflow records the count after applying as the target (the current count when
        # nothing was applied), so that is both what runs and what is wanted now.
        self.replicas.labels(service=service).set(decision.target_replicas)
        self.desired_replicas.labels(service=service).set(decision.target_replicas)
        self.last_decision.labels(service=service).set(decision.timestamp.timestamp())
        if written and self._first_count(decision_key(decision)):
            self.decisions.labels(service=service, action=decision.action).inc()
            metadata = decision.metadata
            if metadata.latency_ms is not None:
                self.llm_latency.labels(service=service).observe(metadata.latency_ms / 1000)
            if metadata.fallback:
                self.llm_fallbacks.labels(service=service).inc()
        if decision.action == "stopped":
            self.stopped(service)

    def _first_count(self, key: str) -> bool:
        if key in self._counted:
            return False
        self._counted[key] = None
        if len(self._counted) > COUNTED_KEYS:
            self._counted.popitem(last=False)
        return True

    def stopped(self, service: str) -> None:
        """A loop's last decision: its gauges go (Prometheus marks them stale), so a stopped
        loop is neither late nor pinned at max. The counters stay, as counters do."""
        for gauge in (
            self.replicas,
            self.desired_replicas,
            self.max_replicas,
            self.check_interval,
            self.last_decision,
        ):
            with contextlib.suppress(KeyError):
                gauge.remove(service)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# The worker's figures. Activities default to it so `python -m worker` needs no wiring beyond
# serving it; tests pass their own DocktorMetrics instead.
METRICS = DocktorMetrics()


def _source_of(error: str, kinds: list[str]) -> str:
    """The sampler writes a failed read as "<kind>: <error>"; a source that could not even be
    set up is reported bare, which is unambiguous when the service has a single source."""
    for kind in kinds:
        if error.startswith(f"{kind}:"):
            return kind
    return kinds[0] if len(kinds) == 1 else UNKNOWN_SOURCE


# ---- the endpoint -------------------------------------------------------------------------


class MetricsServer:
    """`GET /metrics` (any path, as prometheus_client's own server does): docktor's figures,
    then the text of each extra endpoint (the Temporal SDK's). An extra endpoint that does not
    answer is left out with a comment line rather than failing the scrape: docktor's own figures
    matter most when something is wrong."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: DocktorMetrics | None = None,
        extra_urls: Iterable[str] = (),
        extra_timeout: float = 5.0,
    ) -> None:
        self.metrics = metrics or METRICS
        self.extra_urls = list(extra_urls)
        self.extra_timeout = extra_timeout
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}/metrics"

    def start(self) -> MetricsServer:
        # A thread, not the event loop: a scrape must not wait behind a busy activity, and the
        # SDK fetch below is blocking I/O.
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="docktor-metrics", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def body(self) -> bytes:
        parts = [self.metrics.exposition()]
        for url in self.extra_urls:
            parts.append(self._fetch(url))
        return b"".join(part if part.endswith(b"\n") else part + b"\n" for part in parts if part)

    def _fetch(self, url: str) -> bytes:
        try:
            with urllib.request.urlopen(url, timeout=self.extra_timeout) as response:
                return response.read()
        except (urllib.error.URLError, OSError) as exc:
            log.warning("metrics from %s unavailable: %s", url, exc)
            return f"# docktor: metrics from {url} unavailable ({exc})\n".encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                body = server.body()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                # Every scrape would otherwise print a line to stderr.
                log.debug("metrics: " + format, *args)

        return Handler
