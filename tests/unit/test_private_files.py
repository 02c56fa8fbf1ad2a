"""docktor.private_files on a real file system: what it creates and what it refuses."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from docktor.private_files import UnsafePath, open_private, private_dir, read_private, write_private


def test_private_dir_creates_every_missing_folder_0700(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "a" / "b")
    assert made == tmp_path / "a" / "b"
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    group_writable = tmp_path / "shared"
    group_writable.mkdir()
    group_writable.chmod(0o770)
    with pytest.raises(UnsafePath, match="is writable by other users"):
        private_dir(group_writable)


def test_private_dir_without_the_check_only_creates_what_is_missing(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert private_dir(shared, check=False) == shared
    private_dir(shared / "logs" / "docktor", check=False)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777  # left as it is
    for folder in (shared / "logs", shared / "logs" / "docktor"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_an_unsafe_path_is_a_lasting_os_error_in_one_line(tmp_path: Path) -> None:
    # EPERM: a caller that retries passing errors and gives up on lasting ones gives up.
    (tmp_path / "soft").symlink_to(tmp_path / "target")
    with pytest.raises(OSError) as refused:
        open_private(tmp_path / "soft", os.O_WRONLY | os.O_CREAT)
    assert isinstance(refused.value, UnsafePath)
    assert refused.value.errno == errno.EPERM
    assert refused.value.filename == str(tmp_path / "soft")
    assert refused.value.strerror == "refused: it is a symbolic link"
    assert str(refused.value) == f"'{tmp_path / 'soft'}' is a symbolic link"
    assert not (tmp_path / "target").exists()


def test_open_private_refuses_links_hard_links_and_fifos(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("kept\n")
    (tmp_path / "soft").symlink_to(target)
    os.link(target, tmp_path / "hard")
    os.mkfifo(tmp_path / "fifo")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
    with pytest.raises(UnsafePath, match="is a symbolic link"):
        open_private(tmp_path / "soft", flags)
    with pytest.raises(UnsafePath, match="has other names"):
        open_private(tmp_path / "hard", flags)
    with pytest.raises(UnsafePath, match="is not a regular file"):
        open_private(tmp_path / "fifo", os.O_RDWR)
    assert target.read_text() == "kept\n"


def test_write_and_read_private(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_private(path, b"{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_private(path, 2) == b"{}"
    with pytest.raises(UnsafePath, match="larger than 1 bytes"):
        read_private(path, 1)
