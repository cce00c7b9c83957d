"""Rendering a split's examples in worker processes, in order, with bounded memory.

Workers are forked so that they share the MNIST arrays copy-on-write instead of
receiving them pickled; they only run NumPy and zlib. Where `fork` does not
exist (Windows), or with one worker, examples are rendered in this process.
Results are identical either way, since each example depends only on its index.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

_state: tuple[Callable[..., Any], tuple] | None = None


def default_num_workers() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def ordered_map(
    fn: Callable[..., Any],
    fixed_args: tuple,
    indices: range,
    num_workers: int,
    chunk_size: int,
) -> Iterator[tuple[int, Any]]:
    """Yields (i, fn(*fixed_args, i)) for i in indices, in order.

    At most `4 * num_workers` chunks are in flight, so a consumer that stops
    early (e.g. TFDS `--max_examples_per_split`) does not pay for the rest.
    """
    if num_workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for i in indices:
            yield i, fn(*fixed_args, i)
        return

    chunks = (indices[i : i + chunk_size] for i in range(0, len(indices), chunk_size))
    with futures.ProcessPoolExecutor(
        num_workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_set_state,
        initargs=((fn, fixed_args),),
    ) as executor:
        pending: collections.deque[futures.Future] = collections.deque()
        try:
            for chunk in chunks:
                pending.append(executor.submit(_run_chunk, chunk))
                if len(pending) >= 4 * num_workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _set_state(state: tuple[Callable[..., Any], tuple]) -> None:
    global _state
    _state = state


def _run_chunk(chunk: range) -> list[tuple[int, Any]]:
    fn, fixed_args = _state
    return [(i, fn(*fixed_args, i)) for i in chunk]
