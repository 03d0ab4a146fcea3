"""How the process holds memory (recon/system/memory.py): glibc's heaps, and what goes back to
the system (Arrow's freed pages, glibc's free heap pages between steps). The checks of
what goes back run in a fresh interpreter, as Arrow reads its setting when it loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from recon.system.memory import limit_malloc_arenas

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc; glibc only")

_RSS = """
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 >> 20
"""

_ARROW = _RSS + """
import gc, os
import recon
import numpy as np, pyarrow as pa, pyarrow.compute as pc
base = rss()
arrays = [pc.add(pa.array(np.arange(250_000)), i) for i in range(400)]  # 2 MB each
full = rss()
del arrays
gc.collect()
print(os.environ["MIMALLOC_PURGE_DELAY"], base, full, rss())
"""

_HEAP = _RSS + """
import gc
from recon.system.memory import give_back_free_heap
blocks = [b"x" * 100_000 for _ in range(2000)]  # 200 MB, each below glibc's mmap threshold
pin = b"y" * 100_000  # above them in the heap: their pages cannot go back from its top
del blocks
gc.collect()
before = rss()
done = give_back_free_heap()
print(done, before, rss())
"""


def _run(code: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k != "MIMALLOC_PURGE_DELAY"}
    done = subprocess.run([sys.executable, "-c", code], env={**environ, **env},
                          capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_arrow_gives_freed_pages_back_unless_the_environment_says() -> None:
    delay, base, full, after = _run(_ARROW)
    assert delay == "0"
    assert int(full) - int(base) > 600  # the 800 MB were resident
    assert int(after) - int(base) < 150
    # The environment's setting wins: mimalloc's own default keeps the pages.
    delay, base, full, after = _run(_ARROW, MIMALLOC_PURGE_DELAY="1000000")
    assert delay == "1000000"
    assert int(after) - int(base) > 600


def test_free_heap_pages_go_back_between_steps() -> None:
    done, before, after = _run(_HEAP)
    assert done == "True"
    assert int(before) - int(after) > 150  # the 200 MB of freed blocks were still resident


def test_malloc_arenas_are_limited_unless_the_environment_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert limit_malloc_arenas() is (sys.platform == "linux")
