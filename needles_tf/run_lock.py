"""One training run per model directory: an exclusive `fcntl` lock on `DIR/.lock`.

The file names its holder (host, pid, start time). The operating system drops
the lock when the holder exits, however it exits (kill -9 included), so a file
that names a holder but is not locked was left by a dead process: the next run
takes it over and says so. The file is never deleted, so two runs cannot lock
two different files of the same name.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import pathlib
import socket
from collections.abc import Iterator

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another live process holds the model directory's lock."""


def _holder() -> str:
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()}, started {started}"


@contextlib.contextmanager
def run_lock(model_dir: str | os.PathLike) -> Iterator[None]:
    """Holds `model_dir`'s lock for the duration of the block, or raises RunLockedError."""
    path = pathlib.Path(model_dir) / LOCK_FILE
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 4096, 0).decode(errors="replace").strip()
            raise RunLockedError(
                f"--model_dir={model_dir} is in use by another run ({holder or 'unknown'}); "
                "wait for it to end, or use another --model_dir."
            ) from None
        previous = os.pread(descriptor, 4096, 0).decode(errors="replace").strip()
        if previous:
            print(f"Taking over the lock of a run that is no longer running ({previous}).")
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, _holder().encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(descriptor, 0)  # a clean end leaves no holder behind
    finally:
        os.close(descriptor)  # releases the lock
