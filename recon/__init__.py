"""Settlement reconciliation for OVO merchants.

Arrow's allocator (mimalloc) gives the pages a step frees back to the system at once,
unless the environment says otherwise: by default it keeps them, and at 10M rows a run
held 3.7 GiB of them after every Arrow buffer was freed (`recon/system/memory.py`). It reads the
setting when Arrow is loaded, so it is set here, before any module of the package
imports Arrow.
"""

import os

os.environ.setdefault("MIMALLOC_PURGE_DELAY", "0")
