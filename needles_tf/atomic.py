"""Files that are complete or absent: written under a temporary name, then renamed into place."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """A temporary path beside `path` to write to; renamed onto `path` when the block ends.

    The temporary name keeps the file's suffix (Keras and Pillow infer formats from it)
    and starts with ".tmp-". If the block raises, the temporary file is removed and
    `path` is left as it was; a process killed mid-write leaves only the ".tmp-" file.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def replace_directory(temporary: str | os.PathLike, final: str | os.PathLike) -> None:
    """Moves the finished directory `temporary` to `final`; an existing `final` is renamed
    aside first and deleted after, so `final` is always the old or the new one, whole."""
    temporary, final = pathlib.Path(temporary), pathlib.Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.rename(final, old)
    os.rename(temporary, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def writable_directory(
    path: str | os.PathLike, flag: str = "--model_dir", create: bool = True
) -> pathlib.Path:
    """`path` as a directory this process can write in (made if `create`), or a ValueError
    naming `flag` and why not: a file in the way, no permission, a read-only file system."""
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag}={path}: is a file; expected a directory.")
    if not create and not path.is_dir():
        raise ValueError(f"{flag}={path}: no such directory.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".tmp-write-test-"):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"{flag}={path}: cannot write there ({reason}).") from error
    return path


def usual_permissions(path: pathlib.Path) -> None:
    """The mode open()/mkdir() would have given `path`, not tempfile's private 0600/0700."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
