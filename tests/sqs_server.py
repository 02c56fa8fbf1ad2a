"""moto's standalone server as the tests' SQS endpoint: a child process on a free port of
127.0.0.1 that speaks the SQS API (moto[server], a test dependency in pyproject.toml), stopped by
its pid at the end; and the AWS environment that keeps every test's requests on it."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docktor.dev.embedded import LOCALHOST, ManagedProcess, free_port, spawn

# moto's default account: its queue URLs are http://127.0.0.1:<port>/123456789012/<name>.
ACCOUNT = "123456789012"
REGION = "us-east-1"
# moto checks no signature, but botocore signs only with credentials: placeholder ones, in the
# test process's environment (where the worker under test reads them), never in a config.
AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    # No credential lookup may leave the machine: no instance metadata service.
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Variables of the developer's shell that would point the chain elsewhere.
AWS_CLEARED = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)
READY_TIMEOUT_S = 60.0
POLL_S = 0.1


@dataclass(eq=False)
class MotoServer:
    process: ManagedProcess
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def queue_url(self, name: str) -> str:
        return f"{self.endpoint}/{ACCOUNT}/{name}"

    def stop(self) -> None:
        self.process.stop()


def require_moto() -> None:
    """Skip where moto is not installed; fail under CI, where `make test` installs the test
    extra (moto[server]) first."""
    import pytest

    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        if os.environ.get("CI"):
            pytest.fail("moto[server] is not installed: pip install -e '.[test]' adds it")
        pytest.skip("moto[server] is not installed (pip install -e '.[test]')")


def start_moto(state_dir: Path) -> MotoServer:
    """`python -m moto.server` on a free port of 127.0.0.1, once it accepts connections."""
    port = free_port()
    process = spawn(
        "moto_server",
        [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(port)],
        state_dir / "moto.log",
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while not _accepts(port):
            if not process.running:
                raise RuntimeError(f"moto_server exited at start:\n{process.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto_server not ready in {READY_TIMEOUT_S:g}s")
            time.sleep(POLL_S)
    except BaseException:
        process.stop()
        raise
    return MotoServer(process=process, port=port)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def sqs_client(server: MotoServer) -> Any:
    """A plain botocore client on the server, for the tests' own sends, receives and the
    figures to compare with (GetQueueAttributes)."""
    import botocore.session

    session = botocore.session.Session()
    return session.create_client(
        "sqs",
        region_name=REGION,
        endpoint_url=server.endpoint,
        aws_access_key_id=AWS_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
    )
