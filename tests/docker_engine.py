"""A private Docker engine for the tests: Debian's dockerd on its own socket and data root,
with no bridge and no iptables (containers use the host or none network only), plus a local
busybox image made without any registry. Stopped by pid at the end of the session."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

BUSYBOX_IMAGE = "localhost/busybox:local"


@dataclass
class DockerEngine:
    root: Path
    host: str  # unix:///.../docker.sock
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        netns = self.root / "exec" / "netns" / "default"
        if os.path.ismount(netns):
            subprocess.run(["umount", str(netns)], check=False)
        # Leftover mounts of container layers would make the temp dir undeletable.
        subprocess.run(
            f"grep -o '{self.root}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
            shell=True,
            check=False,
        )


def dockerd_available() -> bool:
    return shutil.which("dockerd") is not None


def start_dockerd(root: Path, timeout: float = 60.0) -> DockerEngine:
    import docker

    root.mkdir(parents=True, exist_ok=True)
    sock = root / "docker.sock"
    log = (root / "dockerd.log").open("ab")
    process = subprocess.Popen(
        [
            "dockerd",
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "dockerd.pid"),
            "-H",
            f"unix://{sock}",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    engine = DockerEngine(root=root, host=f"unix://{sock}", process=process)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            tail = (root / "dockerd.log").read_text(errors="replace").splitlines()[-10:]
            raise RuntimeError("dockerd exited during start:\n" + "\n".join(tail))
        if sock.exists():
            try:
                docker.DockerClient(base_url=engine.host).ping()
                return engine
            except Exception:
                pass
        if time.monotonic() > deadline:
            engine.stop()
            raise RuntimeError(f"dockerd did not answer within {timeout:g}s")
        time.sleep(0.2)


def import_busybox(engine: DockerEngine) -> str:
    """`docker import` of a rootfs holding only busybox (and its applet links)."""
    import docker

    client = docker.DockerClient(base_url=engine.host)
    if client.images.list(name=BUSYBOX_IMAGE):
        return BUSYBOX_IMAGE
    busybox = shutil.which("busybox") or "/bin/busybox"
    rootfs = engine.root / "rootfs.tar"
    with tarfile.open(rootfs, "w") as archive:
        archive.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "sleep", "yes", "cat", "true", "dd"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            archive.addfile(link)
    with rootfs.open("rb") as data:
        client.api.import_image_from_data(data.read(), repository="localhost/busybox", tag="local")
    return BUSYBOX_IMAGE
