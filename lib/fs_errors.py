"""One line for a file-system error: the path, what went wrong and what to do.

`explain(e)` turns an OSError (no space, read-only, permission denied, a
path that is a file, ...) into the line every entry point prints instead of
a traceback: the runner, the graphs, the comparison, the trainers (whose
run is then marked interrupted, so `make continue` resumes it once the
cause is fixed; its last checkpoint is intact, every write being atomic).
"""

from __future__ import annotations

import errno

WHAT_TO_DO = {
    errno.ENOSPC: "the disk is full: free space, then 'make continue' resumes",
    errno.EDQUOT: "the disk quota is used up: free space, then 'make continue' resumes",
    errno.EROFS: "the file system is read-only: copy the matrix to a writable place and give RESULTS=<the copy>",
    errno.EACCES: "permission denied: make it writable for this user, or copy the matrix and give RESULTS=<the copy>",
    errno.EPERM: "operation not permitted: make it writable for this user, or copy the matrix and give RESULTS=<the copy>",
    errno.ENOTDIR: "a part of the path is a file, not a directory: move that file away",
    errno.EISDIR: "the path is a directory where a file belongs: move that directory away",
    errno.ENOENT: "it does not exist",
    errno.EIO: "an input/output error: check the disk",
}
FILE_SYSTEM = frozenset(WHAT_TO_DO) - {errno.ENOENT}  # the faults of the storage, not of the path asked for
EXIT_STORAGE = 75  # a trainer stopped by a storage fault (sysexits' EX_TEMPFAIL): its run is interrupted, not failed


def explain(e: OSError) -> str:
    """'<path>: <strerror>; <what to do>' (the path, or both paths of a rename)."""
    where = e.filename if e.filename2 is None else f"{e.filename} -> {e.filename2}"
    head = f"{where}: {e.strerror or e}" if where is not None else str(e.strerror or e)
    hint = WHAT_TO_DO.get(e.errno)
    return f"{head}; {hint}" if hint else head


def is_storage_fault(e: BaseException) -> bool:
    """An OSError of the storage (full, read-only, not permitted, I/O): the run can go on once it is fixed."""
    return isinstance(e, OSError) and e.errno in FILE_SYSTEM
