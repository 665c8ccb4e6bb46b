"""One writer per output: an advisory lock beside each output folder or file.

`with output_lock(out):` takes an exclusive `flock` on `<parent>/.<name>.lock` (beside the output, not
inside it: the generators replace their folder by renaming a staged copy over it, and DVC hashes the
folder's contents). A second writer to the same output fails at once with one line naming the holder:

    error: results/x is being written by pid 4242 on node7 since 2026-11-02T10:15:03+00:00
    (lock file results/.x.lock); wait for it or stop it

The lock belongs to the open file descriptor, so the kernel releases it when the holder exits by any
means, kill -9 included: a stale lock file never blocks a rerun. On a clean exit the file is removed.
flock works between processes of one machine and, on Linux, over NFS (emulated with byte-range locks);
two machines writing one folder on a filesystem without lock support are not detected.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from align_mamba.core.errors import AlignMambaError

log = logging.getLogger("align_mamba.core.lock")
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL}


# Outputs whose lock this process holds (absolute paths): what only the one writer may clean up.
_HELD: set[Path] = set()


def holds_lock(out: str | os.PathLike) -> bool:
    """True while this process holds the lock of output `out`."""
    return Path(os.path.abspath(out)) in _HELD


class OutputLockedError(AlignMambaError):
    """Another process is writing the same output; the message names it (pid, host, start time)."""


def lock_path(out: str | os.PathLike) -> Path:
    """`<parent>/.<name>.lock` for the output `out` (a folder or a file); "." and "x/.." get real names."""
    out = Path(os.path.abspath(out))
    return out.parent / f".{out.name}.lock"


def _holder(path: Path) -> str:
    """What the lock file says about its holder, as a phrase: 'pid 12 on host since TIME'."""
    try:
        fields = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    except OSError:
        fields = {}
    if not {"pid", "host", "started"} <= fields.keys():  # the holder has the lock but has not written yet
        return "another process"
    return f"pid {fields['pid']} on {fields['host']} since {fields['started']}"


def _open_locked(path: Path, display: str) -> int:
    """An fd of `path` holding an exclusive flock; OutputLockedError at once if someone else holds it."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise OutputLockedError(
                f"cannot create the lock file {path} for {display}: {err.strerror or err}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLockedError(
                f"{display} is being written by {_holder(path)} (lock file {path}); wait for it or stop it"
            ) from None
        except OSError as err:
            if err.errno not in _NO_LOCKS:
                os.close(fd)
                raise
            # A filesystem without locks (some NFS mounts): run, but say that nothing guards the output.
            log.warning(
                "cannot lock %s (%s): a second writer into %s would not be detected", path, err.strerror, display
            )
            return fd
        except BaseException:
            os.close(fd)
            raise
        # A holder that was finishing may have removed the file between our open and our flock: the
        # lock we got is on an unlinked inode no one else will see. Retry on the file now at `path`.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def output_lock(out: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of output `out` (folder or file) for the block; yields the lock file's path.

    Raises OutputLockedError (one line, exit 2 through run_cli) when another process holds it.
    Not re-entrant: a process taking the same output's lock twice fails like a second writer.
    """
    path = lock_path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputLockedError(f"cannot create {path.parent} for {out}: {err.strerror or err}") from None
    fd = _open_locked(path, str(out))
    try:
        started = datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds")
        record = f"pid={os.getpid()}\nhost={socket.gethostname()}\nstarted={started}\n".encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record, 0)
        _HELD.add(Path(os.path.abspath(out)))
        yield path
    finally:
        _HELD.discard(Path(os.path.abspath(out)))
        # Unlink while still holding the lock, so a waiting opener sees a changed inode and retries.
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
