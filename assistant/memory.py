"""Handing memory a process has freed back to the operating system.

glibc keeps freed memory in its heap. Embedding batches of changing lengths leaves it scattered there, so a
process embedding passages grows by ~100 MB every 500 passages although nothing stays alive (measured on
2 cores: one `malloc_trim` returns all of it). Builds trim after each part and the embedder every 64 texts
(`embeddings.TRIM_EVERY`), which bounds a full build's peak by a few batches, not by the corpus.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import os
import threading
from collections.abc import Iterator, Mapping

# Model runs at once in one process: one per core. A server's threads answer many questions together, but two
# cores run two forward passes at a time whatever the thread count, and every run in flight holds its own
# activations and its runtime's scratch memory; the rest wait here instead.
_RUNS = threading.BoundedSemaphore(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                       else os.cpu_count() or 1))  # the cores this process may use


@contextlib.contextmanager
def model_run() -> Iterator[None]:
    """Hold one of the process's model-run slots for a forward pass (the embedder's or the reader's)."""
    with _RUNS:
        yield


def trim() -> None:
    """Return the heap's free pages to the OS (glibc's malloc_trim; nothing on another C library)."""
    libc_trim = _malloc_trim()
    if libc_trim is not None:
        libc_trim(0)


def limit_arenas(arenas: int = 2) -> None:
    """Let glibc keep at most `arenas` heaps, whatever the number of threads (glibc's default: 8 a core).

    A server answers on many threads; each thread that allocates gets an arena of its own, and memory freed in
    one is not reused by another. Under 20 concurrent clients the serving process peaked at 1,136 MB with the
    default and 996 MB with two arenas, at the same latency (AMX, 2026-12-06, benchmarks/bench_api.py). Call it
    before the threads start; nothing on another C library."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_ARENA_MAX, arenas)


_M_ARENA_MAX = -8  # glibc's malloc.h


def release() -> None:
    """Collect garbage, then trim: after a large temporary structure is dropped."""
    gc.collect()
    trim()


class TrimEvery:
    """A torch forward hook that trims after every `texts` inputs have gone through the module."""

    def __init__(self, texts: int):
        self.texts = texts
        self.seen = 0

    def __call__(self, module, args, output) -> None:  # noqa: ANN001 - torch's hook signature
        features = args[0] if args else None
        ids = features.get("input_ids") if isinstance(features, Mapping) else None  # a dict or a BatchEncoding
        self.seen += int(ids.shape[0]) if ids is not None and ids.ndim == 2 else 1
        if self.seen >= self.texts:
            self.seen = 0
            trim()


@functools.cache
def _malloc_trim():  # noqa: ANN202 - glibc's malloc_trim, or None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
