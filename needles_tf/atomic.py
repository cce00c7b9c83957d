"""Files that are complete or absent: written under a temporary name, then renamed into place."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
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
