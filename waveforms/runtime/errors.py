"""Errors whose message is the whole story for the user (printed without a traceback), and how a command
reports them."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Iterator


class UserError(Exception):
    """Bad input, missing data or an impossible request: the CLI prints it and exits 1."""

    kind = "error"  # the word before the message: "waveforms train: error: ..."
    exit_code = 1


def reported(prog: str, command: Callable[[], int | None]) -> int:
    """``command()``'s exit code; a :class:`UserError` is one line on stderr and its exit code; Ctrl-C is 130."""
    try:
        return int(command() or 0)
    except UserError as exc:
        print(f"{prog}: {exc.kind}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


class DiskFullError(UserError):
    """A local disk that filled up while a stage wrote to it."""


def _usage(path: str | os.PathLike):
    """``shutil.disk_usage`` of the file system holding ``path`` (its nearest existing folder), or None."""
    import shutil
    from pathlib import Path

    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder)
    except OSError:
        return None


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says a disk (or a quota) is full: ENOSPC or EDQUOT, also from h5py and TensorFlow's
    file writers, whose errors carry it only in their text."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, Exception) and any(text in str(exc) for text in ("No space left on device",
                                                                             "Disk quota exceeded"))


@contextlib.contextmanager
def disk_full(path: str | os.PathLike, what: str = "writing", also: tuple[str | os.PathLike, ...] = ()) -> Iterator[None]:
    """Inside: a full disk while ``what`` ``path`` is a :class:`DiskFullError` naming the path and the free
    space (the one place that turns ENOSPC into words); of ``path`` and the paths in ``also`` (other folders
    written meanwhile) it names the one on the fullest disk. Writers remove their partial files themselves."""
    try:
        yield
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        usages = [(u.free if u else float("inf"), str(p)) for p in (path, *also) for u in [_usage(p)]]
        where = min(usages)[1]
        raise DiskFullError(f"no space left on the disk while {what} {where} ({free_space(where)}); free some "
                            "space there and rerun") from exc


def need_space(path: str | os.PathLike, nbytes: int, what: str = "writing") -> None:
    """A :class:`DiskFullError` now unless ``nbytes`` fit on the disk of ``path``: for writers that cannot meet
    a full disk safely (h5py, which Keras's ``save_weights`` writes with, crashed the process with SIGSEGV
    when it closed a file on a full disk here: h5py 3, HDF5 1.14, tmpfs)."""
    usage = _usage(path)
    if usage is not None and usage.free < nbytes:
        raise DiskFullError(f"no space left on the disk while {what} {path} ({free_space(path)}; it needs about "
                            f"{_bytes(nbytes)}); free some space there and rerun")


def free_space(path: str | os.PathLike) -> str:
    """``"1.2 GB free of 64.0 GB"`` on the file system holding ``path``."""
    usage = _usage(path)
    return f"{_bytes(usage.free)} free of {_bytes(usage.total)}" if usage else "free space unknown"


def _bytes(n: int) -> str:
    """``1234567`` -> ``"1.2 MB"``."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
