"""How the process gives memory back: a run builds and drops frames of millions of rows,
several of them in threads, and what one step frees must serve the next.

- Arrow's allocator (mimalloc) gives freed pages back at once (`MIMALLOC_PURGE_DELAY=0`,
  set by the package's `__init__` unless the environment sets it).
- glibc keeps at most two heaps (`limit_malloc_arenas`). It gives each thread its own
  heap and keeps what a thread frees in it.
- Between steps, glibc gives back the free pages of its heaps (`give_back_free_heap`).
  It returns a freed block to the system only from the top of a heap, or when the block
  is larger than its threshold (which grows to 32 MiB), so the blocks below that, a column
  of up to four million rows, leave their pages in the heap when they are freed.

At 10M rows, the read, load and match of one file, in one process: peak 9,468 MiB with
none of these but the two heaps, 9,002 MiB with Arrow giving pages back, 7,661 MiB with
glibc giving back its free heap pages after the read and after the load as well.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys

M_ARENA_MAX = -8


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once (every step's end calls into it)."""
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """At most `arenas` glibc heaps; with the default (8 per core) the match step at 1M
    rows peaked at 1.75 GiB instead of 1.5 GiB. MALLOC_ARENA_MAX in the environment wins.
    True when applied."""
    libc = _libc()
    if libc is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        return bool(libc.mallopt(M_ARENA_MAX, arenas))  # 1 on success
    except AttributeError:  # not glibc
        return False


def give_back_free_heap() -> bool:
    """glibc's `malloc_trim(0)`: the whole free pages inside its heaps go back to the
    system (at 10M rows, after the load: 0.2 s). True when done."""
    libc = _libc()
    if libc is None:
        return False
    try:
        libc.malloc_trim(0)
    except AttributeError:  # not glibc
        return False
    return True
