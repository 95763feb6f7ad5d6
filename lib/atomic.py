"""Atomic file writes: a temporary file beside the target, fsynced, then renamed over it.

A reader never sees half a file, even after SIGKILL. The temporary file,
`.<name>.<random>.partial`, is created by `open()` with mode 0666 less the
umask, as any other file (results stay readable by colleagues on a shared
server). A kill between creating and renaming it leaves it behind;
`remove_partial(directory)` deletes such leftovers and is called by the one
process that may write there (the holder of a run's claim, of the matrix lock).
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial"
# Fault injection for the fault suite (tests/test_faults_e2e.py): "<n>:<fault>" makes this process's n-th atomic
# write fail half-way with ENOSPC or EACCES, or SIGKILL the process there (leaving its temporary file behind).
FAULT_ENV = "HARNESS_FAULT"
FAULTS = {"ENOSPC": errno.ENOSPC, "EACCES": errno.EACCES, "KILL": None}
_writes = 0  # atomic writes by this process (a forked one goes on counting from its parent's)


def _inject(f) -> None:
    """The fault HARNESS_FAULT asks for at this write, if any (a test hook: unset, it costs one dictionary look-up)."""
    global _writes
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    _writes += 1
    at, _, fault = spec.partition(":")
    if _writes != int(at):
        return
    f.flush()
    f.truncate(f.tell() // 2)  # half the file reached the disk
    if FAULTS[fault] is None:
        os.kill(os.getpid(), signal.SIGKILL)
    raise OSError(FAULTS[fault], os.strerror(FAULTS[fault]))  # as a failed write: atomic_open names the file


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w"):
    """A file object ("w" or "wb") that replaces `path` when the block ends without an error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{PARTIAL}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            _inject(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None:  # a failed write names no file: name the one being written
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_partial(directory: str | os.PathLike) -> list[str]:
    """Delete the temporary files of interrupted atomic writes in `directory`; the names removed."""
    removed = []
    for leftover in sorted(Path(directory).glob(f".*{PARTIAL}")):
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed.append(leftover.name)
    return removed
