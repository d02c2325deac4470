"""Writes that either happen whole or fail as one IndexWriteError, and the fsyncs a commit needs."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ..errors import IndexWriteError


@contextlib.contextmanager
def writing(index_dir: Path, *remove_on_failure: Path) -> Iterator[None]:
    """Turn a write failure into one IndexWriteError, removing what the failed write left."""
    try:
        yield
    except (OSError, RuntimeError, sqlite3.Error) as exc:  # faiss reports a full disk as RuntimeError
        for path in remove_on_failure:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200]
        raise IndexWriteError(f"Cannot write the index in {index_dir}: {reason}. Make the folder writable or "
                              "free disk space, then build again; the previous index is unchanged.") from None


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            fsync_file(path)
    for path in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        fsync_dir(path)
