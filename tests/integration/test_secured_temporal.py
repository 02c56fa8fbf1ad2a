"""docktor against a secured Temporal: HAProxy terminates TLS in front of the dev server and
requires a client certificate (as an mTLS cluster does) or an API key (as Temporal Cloud does).
A worker and the starter run a loop through it, `status` and `explain` read it, and each way of
getting the connection wrong is refused in one line that names the cause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import REPO, async_wait_for, run_docktor, start_worker, write_idle_config
from tls import (
    SERVER_NAME,
    Authority,
    Pair,
    Terminator,
    haproxy_binary,
    issue,
    make_authority,
    start_terminator,
)

from docktor.backends.processes import ProcessScaler
from docktor.dev.embedded import EmbeddedTemporal
from docktor.spec import load_config

if not haproxy_binary():
    if os.environ.get("CI"):
        pytest.fail("no haproxy on this CI machine: scripts/install-test-deps.sh adds it")
    pytest.skip("haproxy is not installed", allow_module_level=True)

API_KEY = "dk-test-" + uuid.uuid4().hex
KEY_VARIABLE = "DOCKTOR_TEST_TEMPORAL_KEY"


@dataclass(frozen=True)
class PKI:
    ca: Authority
    server: Pair
    client: Pair
    stranger: Pair  # a client certificate from a CA the terminator does not trust
    other_ca: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    folder = tmp_path_factory.mktemp("pki")
    ca = make_authority(folder / "ca")
    other = make_authority(folder / "other", "some other CA")
    return PKI(
        ca=ca,
        server=issue(ca, folder / "certs", "server", server=True),
        client=issue(ca, folder / "certs", "client", server=False),
        stranger=issue(other, folder / "other", "stranger", server=False),
        other_ca=other.cert,
    )


@pytest.fixture(scope="module")
def mtls(
    pki: PKI, temporal_dev: EmbeddedTemporal, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Terminator]:
    terminator = start_terminator(
        tmp_path_factory.mktemp("mtls"), temporal_dev.address, pki.server, client_ca=pki.ca.cert
    )
    yield terminator
    terminator.stop()


@pytest.fixture(scope="module")
def keyed(
    pki: PKI, temporal_dev: EmbeddedTemporal, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Terminator]:
    terminator = start_terminator(
        tmp_path_factory.mktemp("keyed"), temporal_dev.address, pki.server, api_key=API_KEY
    )
    yield terminator
    terminator.stop()


def secured_config(tmp_path: Path, address: str, temporal: dict[str, object]) -> Path:
    """An idle-process config on its own project and task queue, with `temporal` merged into
    its temporal block."""
    path = write_idle_config(tmp_path, address, "tls", uuid.uuid4().hex[:6])
    document = yaml.safe_load(path.read_text())
    document["temporal"].update(temporal)
    path.write_text(yaml.safe_dump(document))
    return path


def mtls_block(pki: PKI, **changes: object) -> dict[str, object]:
    tls: dict[str, object] = {
        "server_ca_cert_path": str(pki.ca.cert),
        "client_cert_path": str(pki.client.cert),
        "client_key_path": str(pki.client.key),
        "server_name": SERVER_NAME,
    }
    tls.update(changes)
    return {"tls": {k: v for k, v in tls.items() if v is not None}}


def starter(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "starter", "--service", "consumer", "--config", str(config), *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def run_a_loop(path: Path, tmp_path: Path, **env: str) -> str:
    """Worker and starter through the terminator until the loop has started its replica;
    `status` and `explain` read it; the loop is stopped. Returns everything docktor wrote."""
    config = load_config(path)
    scaler = ProcessScaler(config.services[0], project=config.project or "")
    worker = start_worker(path, tmp_path / "worker.log", **env)
    said: list[str] = []
    try:
        started = starter(path, **env)
        assert started.returncode == 0, started.stderr
        said += [started.stdout, started.stderr]

        async def one_replica() -> bool:
            return await scaler.replicas() == 1

        await async_wait_for(one_replica, 60, "the loop's first replica")
        for command in (["status"], ["explain", "--service", "consumer"]):
            result = await run_docktor(path, *command, **env)
            assert result.returncode == 0, result.stderr
            said += [result.stdout, result.stderr]
        assert "consumer" in said[-4] and "scale_up" in said[-2]
        stopped = starter(path, "--stop", **env)
        assert stopped.returncode == 0, stopped.stderr
        said += [stopped.stdout, stopped.stderr]
    finally:
        worker.stop()
        await scaler.stop_all()
    log = worker.log()
    assert "Traceback" not in log
    return "\n".join([*said, log, Path(config.journal_path).read_text()])


async def test_a_loop_runs_through_an_mtls_terminator(
    tmp_path: Path, mtls: Terminator, pki: PKI
) -> None:
    path = secured_config(tmp_path, mtls.address, mtls_block(pki))
    validate = await run_docktor(path, "config", "validate")
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert f"OK   temporal: {mtls.address} (mTLS)" in validate.stdout

    written = await run_a_loop(path, tmp_path)
    assert f"on {mtls.address} (mTLS)" in written  # the worker says how it connected


async def test_the_temporal_cli_profile_file_configures_the_connection(
    tmp_path: Path, mtls: Terminator, pki: PKI
) -> None:
    """Nothing about the connection in docktor.yaml: the address and the certificates come
    from the profile named by TEMPORAL_PROFILE in the Temporal CLI's file."""
    profiles = tmp_path / "temporal.toml"
    profiles.write_text(
        "[profile.prod]\n"
        f'address = "{mtls.address}"\n'
        "[profile.prod.tls]\n"
        f'server_ca_cert_path = "{pki.ca.cert}"\n'
        f'client_cert_path = "{pki.client.cert}"\n'
        f'client_key_path = "{pki.client.key}"\n'
    )
    path = write_idle_config(tmp_path, "unused", "tls", uuid.uuid4().hex[:6])
    document = yaml.safe_load(path.read_text())
    del document["temporal"]["address"]
    path.write_text(yaml.safe_dump(document))
    env = {"TEMPORAL_CONFIG_FILE": str(profiles), "TEMPORAL_PROFILE": "prod"}

    validate = await run_docktor(path, "config", "validate", **env)
    assert f"OK   temporal: {mtls.address} (mTLS, profile prod)" in validate.stdout, (
        validate.stdout + validate.stderr
    )
    missing = await run_docktor(path, "status", **{**env, "TEMPORAL_PROFILE": "staging"})
    assert missing.returncode == 2
    assert "Profile 'staging' not found" in missing.stderr


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ({"client_cert_path": None, "client_key_path": None}, "bad client cert"),
        ("stranger", "bad client cert"),
        ({"server_ca_cert_path": "other"}, "unknown CA"),
        ({"server_name": "wrong.test"}, "name mismatch"),
    ],
    ids=["no-client-cert", "client-cert-of-another-ca", "unknown-ca", "name-mismatch"],
)
async def test_a_wrong_tls_setting_is_refused_in_one_line_naming_the_cause(
    tmp_path: Path, mtls: Terminator, pki: PKI, change: object, cause: str
) -> None:
    if change == "stranger":
        changes: dict[str, object] = {
            "client_cert_path": str(pki.stranger.cert),
            "client_key_path": str(pki.stranger.key),
        }
    else:
        assert isinstance(change, dict)
        changes = {k: str(pki.other_ca) if v == "other" else v for k, v in change.items()}
    path = secured_config(tmp_path, mtls.address, mtls_block(pki, **changes))

    status = await run_docktor(path, "status")
    assert status.returncode == 1
    problem = status.stderr.strip()
    assert len(problem.splitlines()) == 1, problem
    assert f"Temporal at {mtls.address} refused the connection: TLS {cause}" in problem

    validate = await run_docktor(path, "config", "validate")
    assert validate.returncode == 1
    failed = [line for line in validate.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and "FAIL temporal:" in failed[0] and f"TLS {cause}" in failed[0]

    worker = start_worker(path, tmp_path / "worker.log")
    assert worker.process.wait(timeout=60) == 1
    lines = worker.log().strip().splitlines()
    assert f"TLS {cause}" in lines[-1] and "Traceback" not in worker.log()


async def test_an_api_key_reaches_the_server_and_no_log_history_or_journal(
    tmp_path: Path, keyed: Terminator, pki: PKI, temporal_dev: EmbeddedTemporal
) -> None:
    """The terminator lets a request through only with `authorization: Bearer <key>`: a loop
    that runs proves the key reached the connection as the SDK sends it."""
    temporal = {"api_key_env": KEY_VARIABLE, "tls": {"server_ca_cert_path": str(pki.ca.cert)}}
    path = secured_config(tmp_path, keyed.address, temporal)
    env = {KEY_VARIABLE: API_KEY}

    validate = await run_docktor(path, "config", "validate", **env)
    assert f"OK   temporal: {keyed.address} (TLS, API key from {KEY_VARIABLE})" in validate.stdout

    written = await run_a_loop(path, tmp_path, **env)
    assert API_KEY not in written

    from temporalio.client import Client

    plain = await Client.connect(temporal_dev.address)
    config = load_config(path)
    history = await plain.get_workflow_handle(config.workflow_id("consumer")).fetch_history()
    assert API_KEY not in json.dumps(history.to_json_dict())

    wrong = await run_docktor(path, "status", **{KEY_VARIABLE: "dk-wrong"})
    assert wrong.returncode == 1
    assert "API key missing or wrong" in wrong.stderr and "dk-wrong" not in wrong.stderr
    unset = await run_docktor(path, "status")
    assert unset.returncode == 2
    assert f"temporal.api_key_env: the environment variable {KEY_VARIABLE} is not set" in (
        unset.stderr
    )

    # The ecosystem's variable works too, with no api_key_env in the file.
    bare = secured_config(tmp_path, keyed.address, {"tls": temporal["tls"]})
    status = await run_docktor(bare, "status", TEMPORAL_API_KEY=API_KEY)
    assert status.returncode == 0, status.stderr
