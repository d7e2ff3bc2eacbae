"""The errors a user can fix (bad params, missing data, a NaN loss, a full disk) and how commands report them.

A write the file system refuses (disk full, over quota, a file size limit, a read-only file system, no
permission) is translated here, in one place, into a ``StorageError`` that names the path and what to do:
``writing(path, what)`` around a write, ``check_writable_dir`` before a long computation, and
``run_command`` for a refused write that reaches it untranslated.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """Base of the errors whose message says what to fix: printed without a traceback, exit status 2."""


class StorageError(UserError):
    """A write the file system refused: the message names the path, the reason and what to do."""


_FULL = {errno.ENOSPC, errno.EDQUOT}
_DENIED = {errno.EACCES, errno.EPERM}
STORAGE_ERRNOS = frozenset({*_FULL, *_DENIED, errno.EFBIG, errno.EROFS})


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return Path(".")


def _unwritable_dir(path: Path) -> Path | None:
    """The directory that refuses ``path`` being created, replaced or removed, if one can be named."""
    if os.path.lexists(path) and not path.is_dir():
        path = path.parent
    directory = _nearest_existing(path)
    if not directory.is_dir():
        directory = directory.parent
    if not os.access(directory, os.W_OK | os.X_OK):
        return directory
    return None


def _reason(code: int, path: Path) -> str:
    if code in _FULL:
        what = "no space left on device" if code == errno.ENOSPC else "disk quota exceeded"
        return f"{what}: the disk is full; free some space (or write elsewhere) and run it again"
    if code == errno.EFBIG:
        return (
            "file too large: a file size limit was reached (ulimit -f, or the file system's maximum); "
            "raise the limit or write elsewhere"
        )
    if code == errno.EROFS:
        return "read-only file system; run it from a writable copy of the repository"
    directory = _unwritable_dir(path)
    if directory is None:
        return f"permission denied on {path}; check its permissions and its owner"
    return f"permission denied: the directory {directory} is not writable; make it writable (chmod u+w {directory}) or run it from a copy you own"


def storage_message(
    err: OSError, path: str | os.PathLike[str] | None = None, what: str | None = None
) -> str | None:
    """One line for a write the file system refused (``None`` for any other OS error).

    ``path`` is the output being written (default: the file the error names), ``what`` says what it is.
    """
    if err.errno not in STORAGE_ERRNOS:
        return None
    failed = Path(err.filename) if err.filename else None
    target = Path(path) if path is not None else failed
    if target is None:
        return f"cannot write: {os.strerror(err.errno)}"
    name = f"{what} {target}" if what else str(target)
    return f"cannot write {name}: {_reason(err.errno, failed or target)}"


@contextmanager
def writing(path: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Around the writes of one output: a refused write becomes a ``StorageError`` naming ``path``."""
    try:
        yield
    except OSError as err:
        message = storage_message(err, path, what)
        if message is None:
            raise
        raise StorageError(message) from err


def check_writable_dir(directory: str | os.PathLike[str], what: str) -> None:
    """Fail now, before any long computation, if ``what`` could not be written under ``directory``.

    ``directory`` need not exist yet: its nearest existing ancestor must let us create it.
    """
    directory = Path(directory)
    refusing = _unwritable_dir(directory)
    if refusing is not None:
        raise StorageError(
            f"cannot write {what} under {directory}: permission denied: the directory {refusing} is not "
            f"writable; make it writable (chmod u+w {refusing}) or run it from a copy you own"
        )


def run_command(prog: str, command: Callable[[], object]) -> int:
    """Run ``command``; a ``UserError`` or a refused write prints ``prog: error: ...`` and gives 2, Ctrl-C 130."""
    try:
        command()
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        message = storage_message(err)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0
