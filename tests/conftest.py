"""Session-wide real servers: one nats-server and one Temporal dev server for the whole run,
each on free ports in its own temporary directory and stopped by pid at the end."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `import helpers` from any test folder, whether or not tests/ becomes a package later.
sys.path.insert(0, str(Path(__file__).parent))

from docktor.embedded import EmbeddedNats, EmbeddedTemporal, start_nats, start_temporal  # noqa: E402


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    server = start_nats(tmp_path_factory.mktemp("nats"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def temporal_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTemporal]:
    server = start_temporal(tmp_path_factory.mktemp("temporal"))
    try:
        yield server
    finally:
        server.stop()
