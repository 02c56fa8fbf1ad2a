"""`docktor mcp`'s what_if tool, the one front door of what_if, spoken to in raw JSON-RPC over
stdio: the official client writes NaN as null, so only raw text can carry the NaN, Infinity and
1e999 that a JSON parser turns into non-finite floats."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import IDLE_COMMAND

from docktor.dev.embedded import free_port

pytestmark = pytest.mark.integration


class Session:
    """A `docktor mcp` subprocess and its JSON-RPC lines, each read within a deadline."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.next_id = 0

    async def send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        await self.process.stdin.drain()

    async def request(self, method: str, params_json: str) -> dict[str, Any]:
        """Send a request whose params are raw JSON text; its response."""
        self.next_id += 1
        await self.send(
            f'{{"jsonrpc":"2.0","id":{self.next_id},"method":"{method}","params":{params_json}}}'
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(30):
            while True:
                line = await self.process.stdout.readline()
                assert line, "the server closed its output"
                message = json.loads(line)
                if message.get("id") == self.next_id:
                    return message


@pytest.fixture
async def session(tmp_path: Path) -> Any:
    document = {
        "project": "whatif",
        # Nobody listens here: a refusal must come before any call to Temporal.
        "temporal": {"address": f"127.0.0.1:{free_port()}"},
        "services": [
            {
                "name": "worker",
                "backend": "processes",
                "command": IDLE_COMMAND,
                "min_replicas": 1,
                "max_replicas": 10,
                "policy": "target",
                "target": {"queue.backlog_per_replica": 100},
            }
        ],
    }
    path = tmp_path / "docktor.yaml"
    path.write_text(yaml.safe_dump(document))
    environment = {k: v for k, v in os.environ.items() if k != "TEMPORAL_ADDRESS"}
    with (tmp_path / "mcp.log").open("w") as errlog:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "docktor", "mcp", "--config", str(path)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errlog,
            env=environment,
        )
        try:
            mcp = Session(process)
            init = await mcp.request(
                "initialize",
                json.dumps(
                    {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "pytest", "version": "1"},
                    }
                ),
            )
            assert "result" in init, init
            await mcp.send('{"jsonrpc":"2.0","method":"notifications/initialized"}')
            yield mcp
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("raw", "shown"), [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf"), ("1e999", "inf")]
)
async def test_what_if_refuses_a_non_finite_metric_in_one_line(
    session: Session, raw: str, shown: str
) -> None:
    answer = await session.request(
        "tools/call",
        '{"name":"what_if","arguments":{"service":"worker","replicas":2,'
        f'"metrics":{{"queue.backlog":{raw}}}}}}}',
    )
    result = answer["result"]
    assert result["isError"] is True
    [content] = result["content"]
    # The SDK puts "Error executing tool what_if: " before the tool's own line.
    text = content["text"]
    assert text.endswith(f": metrics: 'queue.backlog' must be a finite number, not {shown}")
    assert "\n" not in text
