"""Folders and files only the worker's user can touch: folders 0700, files 0600, never opened
through a symbolic link.

What the worker keeps on disk steers it: a pid file says which process it may signal, and a log
it appends to is written with the worker's rights, so a root worker appending to a symlink
planted in its folder writes wherever the link points. Hence a folder is refused when someone
else could write into it, and a file is refused when it is a link, is not a regular file, or has
a second name (a hard link to a file elsewhere).

A leaf module. `UnsafePath` is an OSError (EPERM: retrying cannot cure it), so a caller that
sorts OSErrors by errno counts it as lasting; callers with a field to name turn it into their own
error.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600
# Never follow a link in the last component; never leak the descriptor into a child process
# (a replica gets its own log as stdout and nothing else).
_SAFE_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(PermissionError):
    """A folder or file that someone other than the worker could have placed or could change.

    str() is one line, the path and why (`'/s/x.log' is a symbolic link`); as an OSError its
    errno is EPERM, its filename the path and its strerror `refused: it is a symbolic link`."""

    def __init__(self, path: str | os.PathLike[str], why: str) -> None:
        super().__init__(errno.EPERM, f"refused: it {why}", os.fspath(path))
        self.why = why

    def __str__(self) -> str:
        return f"'{self.filename}' {self.why}"

    def __reduce__(self) -> tuple[type[UnsafePath], tuple[str, str]]:
        # OSError's own would call __init__ with (errno, strerror, filename).
        return (type(self), (self.filename, self.why))


def private_dir(path: Path, *, check: bool = True) -> Path:
    """Create `path` and its missing parents with mode 0700; with `check`, also check the folder
    that is there: it must be a folder owned by this user that neither group nor others can
    write. Without it, a folder that exists is left as it is (the decision log's: the operator's
    config puts the log where it likes).

    Raises UnsafePath for a folder that fails the check, OSError when one cannot be created."""
    missing: list[Path] = []
    for folder in (path, *path.parents):
        if os.path.lexists(folder):
            break
        missing.append(folder)
    for folder in reversed(missing):
        # Path.mkdir(parents=True) would create the parents with the default mode. One made
        # meanwhile by another call is taken like any existing one (a file of that name fails
        # the check, or the caller's next use of the folder).
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=FOLDER_MODE)
    if check:
        check_private_dir(path)
    return path


def check_private_dir(path: Path) -> None:
    """UnsafePath unless `path` is a folder of this user's that only this user can write."""
    # A link to a folder is the user's to configure; what counts is the folder it leads to.
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UnsafePath(path, "does not exist") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePath(path, "is not a folder")
    if info.st_uid != os.geteuid():
        raise UnsafePath(path, f"belongs to another user (uid {info.st_uid})")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        mode = stat.S_IMODE(info.st_mode)
        raise UnsafePath(path, f"is writable by other users (mode {mode:04o}); chmod 700 it")


def open_no_link(path: Path, flags: int) -> int:
    """os.open with O_NOFOLLOW and O_CLOEXEC, creating with mode 0600; UnsafePath for a
    symbolic link at `path`. For reading a file that may be another user's (an operator's
    command reading the worker's log); what the worker writes goes through open_private."""
    try:
        return os.open(path, flags | _SAFE_FLAGS, FILE_MODE)
    except OSError as exc:
        # ELOOP is what Linux reports for a link under O_NOFOLLOW; some systems say otherwise.
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise UnsafePath(path, "is a symbolic link") from None
        raise


def open_private(path: Path, flags: int) -> int:
    """open_no_link, and the descriptor is of a regular file of this user's with no other name,
    else UnsafePath (and nothing is written)."""
    fd = open_no_link(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(path, "is not a regular file")
        if info.st_uid != os.geteuid():
            raise UnsafePath(path, f"belongs to another user (uid {info.st_uid})")
        if info.st_nlink > 1:
            raise UnsafePath(path, "has other names (hard links)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (a reader sees the old or the new, never half):
    written to a fresh `<name>.tmp` (never an existing one, which may be a link), then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    # Unlinking removes a planted link itself, not what it points to.
    tmp.unlink(missing_ok=True)
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def read_private(path: Path, limit: int) -> bytes:
    """The contents of `path`, through open_private; UnsafePath when it is over `limit` bytes
    (a file the worker wrote is small, so a big one was not written by it)."""
    fd = open_private(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as source:
        data = source.read(limit + 1)
    if len(data) > limit:
        raise UnsafePath(path, f"is larger than {limit} bytes")
    return data
