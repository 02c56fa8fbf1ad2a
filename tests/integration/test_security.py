"""What docktor may touch, run and reveal (SECURITY.md), each checked against the real part:

- the compose backend scales only the containers of its own project and service, on a private
  dockerd where neighbours that look alike (the same service in other projects, other services
  of the project, `compose run` one-offs) run and lie stopped beside it;
- the processes backend runs a command as an argv, never through a shell;
- the API key reaches the model server and nothing else: not the worker's log (at DEBUG), not
  the decision log, not the workflow history, even when the server echoes it back;
- the worker's metrics endpoint listens on loopback unless told otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from docker.models.containers import Container
from docker_engine import DockerEngine
from helpers import IDLE_COMMAND, async_wait_for, wait_for
from openai_stub import OpenAIStub, Reply, running_stub

from docktor.backends import ScalerConfigError
from docktor.backends.compose import ComposeScaler
from docktor.backends.processes import ProcessScaler
from docktor.client.loops import LoopClient
from docktor.client.temporal import connect
from docktor.dev.embedded import EmbeddedTemporal, free_port
from docktor.plan import ServicePlan
from docktor.spec import ServiceSpec, load_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]


# ---- compose: only the configured project and service ----------------------------------------


@pytest.fixture
def engine(docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    client = docker.DockerClient(base_url=docker_engine.host)
    made: list[str] = []
    yield client, made
    for container in client.containers.list(all=True):
        labels = container.labels or {}
        if labels.get("docktor.test") in made:
            container.remove(force=True, v=True)
    client.close()


def container(
    client: docker.DockerClient,
    image: str,
    tag: str,
    project: str,
    service: str,
    number: int,
    *,
    oneoff: bool = False,
    running: bool = True,
) -> Container:
    """A container labelled as `docker compose up` (or `run`, for a one-off) labels it."""
    name = f"{project}-{service}-{'run-' + uuid.uuid4().hex[:6] if oneoff else number}"
    made = client.containers.create(
        image,
        command=["sleep", "3600"],
        name=name,
        network_mode="none",
        stop_signal="SIGKILL",
        labels={
            "com.docker.compose.project": project,
            "com.docker.compose.service": service,
            "com.docker.compose.oneoff": "True" if oneoff else "False",
            "com.docker.compose.container-number": str(number),
            "docktor.test": tag,
        },
    )
    if running:
        made.start()
    made.reload()
    return made


def fingerprint(c: Container) -> tuple[str, str, str]:
    c.reload()
    return c.status, c.attrs["State"]["StartedAt"], c.attrs["State"]["FinishedAt"]


async def test_compose_scales_only_its_own_project_and_service(
    engine: Any, busybox_image: str
) -> None:
    client, made = engine
    tag = uuid.uuid4().hex[:8]
    made.append(tag)
    project = f"shop{tag}"

    def make(*args: Any, **kwargs: Any) -> Container:
        return container(client, busybox_image, tag, *args, **kwargs)

    own = make(project, "worker", 1)
    own_stopped = make(project, "worker", 2, running=False)
    neighbours = {
        # The same service name in other projects, one whose name extends ours.
        "other project, running": make(f"{project}-eu", "worker", 1),
        "other project, stopped": make(f"other{tag}", "worker", 2, running=False),
        # Other services of our project, one whose name extends ours.
        "other service, running": make(project, "worker-2", 1),
        "other service, stopped": make(project, "db", 1, running=False),
        # `docker compose run worker`: a one-off of our very service.
        "one-off, running": make(project, "worker", 1, oneoff=True),
        "one-off, stopped": make(project, "worker", 1, oneoff=True, running=False),
    }
    before = {name: fingerprint(c) for name, c in neighbours.items()}

    worker = ServicePlan.from_spec(ServiceSpec(name="worker", backend="compose"))
    scaler = ComposeScaler(worker, project=project)
    assert await scaler.replicas() == 1
    # Up: our stopped replica 2 is started again and a third is cloned; no neighbour is started.
    assert await scaler.scale_to(3) == 3
    ours = client.containers.list(
        all=True,
        filters={"label": [f"com.docker.compose.project={project}", "docktor.test=" + tag]},
    )
    assert own_stopped.id in {c.id for c in ours}
    # Down to zero and up again: only our replicas are stopped, removed and restarted.
    assert await scaler.scale_to(0) == 0
    assert await scaler.scale_to(2) == 2

    for name, neighbour in neighbours.items():
        assert fingerprint(neighbour) == before[name], f"{name} was touched"
    mine = client.containers.list(
        filters={
            "label": [
                f"com.docker.compose.project={project}",
                "com.docker.compose.service=worker",
                "com.docker.compose.oneoff=False",
            ]
        }
    )
    assert len(mine) == 2 and own.id in {c.id for c in mine}
    # Clean up the clones too (they carry the template's labels, the test tag included).
    assert all((c.labels or {}).get("docktor.test") == tag for c in mine)


# ---- processes: never a shell --------------------------------------------------------------

# Writes its argv and one environment value where the test can read them.
ECHO = (
    "import json, os, sys; "
    "open(os.environ['OUT'], 'w').write(json.dumps([sys.argv[1:], os.environ['TRAP']]))"
)
HOSTILE_ARGS = [
    "; touch pwned-semicolon",
    "$(touch pwned-subshell)",
    "`touch pwned-backtick`",
    "a | touch pwned-pipe && touch pwned-and",
    "> pwned-redirect",
    "*",
    "$HOME",
    "'quoted' \"twice\"",
    "",
]


async def test_processes_run_the_command_literally_never_through_a_shell(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "existing-file").write_text("a glob would expand to this")
    out = tmp_path / "argv.json"
    spec = ServicePlan.from_spec(
        ServiceSpec(
            name="echo",
            backend="processes",
            command=[sys.executable, "-c", ECHO, *HOSTILE_ARGS],
            env={"OUT": str(out), "TRAP": "$(touch pwned-env)"},
            workdir=str(workdir),
            state_dir=str(tmp_path / "state"),
            stop_grace_period=2,
        )
    )
    scaler = ProcessScaler(spec, project="sec")
    try:
        assert await scaler.scale_to(1) == 1
        wait_for(lambda: out.exists() and out.read_text(), 20, "the replica's argv")
    finally:
        await scaler.stop_all()
    argv, trap = json.loads(out.read_text())
    assert argv == HOSTILE_ARGS
    assert trap == "$(touch pwned-env)"
    assert sorted(p.name for p in workdir.iterdir()) == ["existing-file"]

    # A program name with shell syntax in it is a name that does not exist, not a command line.
    odd = spec.model_copy(update={"command": [f"true; touch {workdir}/pwned-program"]})
    with pytest.raises(ScalerConfigError, match="not found"):
        await ProcessScaler(odd, project="sec").scale_to(1)
    assert sorted(p.name for p in workdir.iterdir()) == ["existing-file"]


# ---- the worker process: the API key stays secret; metrics on loopback ----------------------

API_KEY = "sk-docktor-secret-" + uuid.uuid4().hex
MODEL = "gpt-test-mini"


def listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) of every TCP socket process `pid` listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, size in (("tcp", 4), ("tcp6", 16)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address, port = local.split(":")
            raw = bytes.fromhex(address)
            if size == 4:
                host = ".".join(str(b) for b in raw[::-1])
            else:  # four little-endian 32-bit words
                words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
                host = ":".join(b"".join(words)[i : i + 2].hex() for i in range(0, 16, 2))
            found.add((host, int(port, 16)))
    return found


def start_worker(
    config: Path, log: Path, extra: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "worker", "--config", str(config), *extra],
            cwd=REPO,
            env={**{k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with running_stub() as server:
        server.models = [MODEL]
        yield server


def llm_config(tmp_path: Path, temporal: EmbeddedTemporal, stub: OpenAIStub) -> Path:
    tag = uuid.uuid4().hex[:6]
    data = {
        "project": f"sec-{tag}",
        "state_dir": str(tmp_path / "state"),
        "temporal": {"address": temporal.address, "task_queue": f"docktor-sec-{tag}"},
        "llm": {"provider": "openai", "base_url": stub.base_url, "model": MODEL, "timeout_s": 5},
        "services": [
            {
                "name": "api",
                "backend": "processes",
                "command": IDLE_COMMAND,
                "min_replicas": 1,
                "max_replicas": 3,
                "check_interval": "1h",  # one decision per nudge
                "cooldown": {"up": 0, "down": 0},
                "stop_grace_period": 0,
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_the_api_key_reaches_the_model_server_and_nothing_else(
    tmp_path: Path, temporal_dev: EmbeddedTemporal, stub: OpenAIStub
) -> None:
    # A server that echoes the key back: in an answer's reason, and in an error's message.
    stub.script(
        Reply.json(
            {"action": "scale_up", "target_replicas": 2, "reason": f"auth was Bearer {API_KEY}"}
        ),
        Reply.http_error(401, f"Incorrect API key provided: {API_KEY}"),
        Reply.text(f"not JSON, but the key: {API_KEY}"),
    )
    path = llm_config(tmp_path, temporal_dev, stub)
    config = load_config(path)
    port = free_port()
    log = tmp_path / "worker.log"
    # DEBUG: the most the worker (and the openai/httpx libraries) ever log.
    worker = start_worker(
        path,
        log,
        ["--metrics-port", str(port)],
        {"OPENAI_API_KEY": API_KEY, "DOCKTOR_LOG_LEVEL": "DEBUG"},
    )
    client = await connect(config)
    try:
        # The metrics endpoint: on loopback, as is everything else the worker listens on.
        wait_for(lambda: ("127.0.0.1", port) in listening(worker.pid), 60, "metrics listener")
        assert all(host == "127.0.0.1" for host, _ in listening(worker.pid)), listening(worker.pid)

        await LoopClient(client, config).start(config.services[0])
        handle = await LoopClient(client, config).handle("api")
        for count in (1, 2, 3):
            if count > 1:
                await handle.signal("nudge")

            async def decided(count: int = count) -> bool:
                return len(await LoopClient(client, config).decisions("api", tail=50)) >= count

            await async_wait_for(decided, 60, f"{count} decisions")
        decisions = await LoopClient(client, config).decisions("api", tail=50)
        await LoopClient(client, config).stop("api")
    finally:
        stop(worker)
        plan = ServicePlan.from_spec(config.services[0])
        await ProcessScaler(plan, project=config.project or "").stop_all()

    # The key was used, and the echo happened...
    assert all(r.headers.get("authorization") == f"Bearer {API_KEY}" for r in stub.requests)
    assert decisions[0].target_replicas == 2 and "[redacted]" in decisions[0].reason
    assert decisions[1].metadata.fallback == "HTTP 401"
    assert decisions[2].metadata.fallback == "invalid JSON"
    # ...but the key is in none of what docktor keeps or prints.
    history = await handle.fetch_history()
    assert "[redacted]" in "\n".join(str(e) for e in history.events)  # payloads are searched
    assert API_KEY not in "\n".join(str(e) for e in history.events)
    assert API_KEY not in history.to_json()
    journal = Path(config.journal_path).read_text()
    assert journal.count("\n") >= 4 and API_KEY not in journal
    worker_log = log.read_text(errors="replace")
    assert "LLM advice for api not used" in worker_log  # the log did see the failures
    assert API_KEY not in worker_log


def test_the_metrics_endpoint_binds_where_it_is_told(
    tmp_path: Path, temporal_dev: EmbeddedTemporal, stub: OpenAIStub
) -> None:
    """--metrics-host is honoured (here another loopback address, per the tests' network
    rule); the SDK's own endpoint stays on 127.0.0.1 whatever is asked."""
    path = llm_config(tmp_path, temporal_dev, stub)
    port = free_port()
    worker = start_worker(
        path,
        tmp_path / "worker.log",
        ["--metrics-port", str(port), "--metrics-host", "127.0.0.2"],
        {"OPENAI_API_KEY": API_KEY},
    )
    try:
        wait_for(lambda: ("127.0.0.2", port) in listening(worker.pid), 60, "metrics listener")
        others = listening(worker.pid) - {("127.0.0.2", port)}
        assert others and all(host == "127.0.0.1" for host, _ in others), others
    finally:
        stop(worker)
