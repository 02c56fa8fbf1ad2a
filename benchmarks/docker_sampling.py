"""How long one CPU/memory sample of a service takes as its replica count grows.

The docker metric source reads every replica's stats concurrently, so 20 replicas should cost
about the time of one `stats` call (one to two seconds on this engine), not twenty. Starts its
own dockerd on a private socket (Debian's docker.io, as the tests do) and stops it at the end:

    .venv/bin/python benchmarks/docker_sampling.py [--counts 1 5 10 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from docker_engine import import_busybox, start_dockerd  # noqa: E402

from docktor.sources.docker import DockerMetricSource  # noqa: E402
from docktor.spec import ServiceSpec  # noqa: E402


async def measure(client: docker.DockerClient, image: str, count: int) -> tuple[float, int]:
    project = f"bench{count}"
    for number in range(1, count + 1):
        client.containers.run(
            image,
            ["sleep", "3600"],
            name=f"{project}-idle-{number}",
            detach=True,
            network_mode="none",
            labels={
                "com.docker.compose.project": project,
                "com.docker.compose.service": "idle",
                "com.docker.compose.oneoff": "False",
                "com.docker.compose.container-number": str(number),
            },
        )
    spec = ServiceSpec(name="idle", backend="compose", project=project)
    source = DockerMetricSource()
    try:
        started = time.perf_counter()
        gauges, _ = await source.sample(spec)
        elapsed = time.perf_counter() - started
    finally:
        await source.close()
        for container in client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={project}"}
        ):
            container.remove(force=True)
    return elapsed, int("cpu.avg_pct" in gauges)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 5, 10, 20])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dkb-", dir="/tmp"))
    engine = start_dockerd(root)
    try:
        os.environ["DOCKER_HOST"] = engine.host
        image = import_busybox(engine)
        client = docker.DockerClient(base_url=engine.host)
        print(f"{'replicas':>8}  {'seconds':>8}")
        for count in args.counts:
            seconds, sampled = await measure(client, image, count)
            print(f"{count:>8}  {seconds:>8.2f}" + ("" if sampled else "  (no sample)"))
    finally:
        engine.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
