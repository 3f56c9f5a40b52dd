"""How a DataLoader worker starts: it dies with the process that started it, and is seeded as
Lightning seeds it.

Without the first, a training process killed with SIGKILL (an OOM kill, a sweep worker's death)
leaves its loader workers running, re-parented to init, holding their memory for good.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from lightning.fabric.utilities.seed import pl_worker_init_function

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def die_with(parent: int) -> None:
    """Have the kernel kill this process when the process that started it dies (Linux; elsewhere
    nothing). That is `parent` itself, or with forkserver the fork server, which ends with it."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
        os.kill(parent, 0)
    except ProcessLookupError:  # it died before prctl took effect
        os._exit(1)


def start_worker(worker_id: int, rank: int, parent: int) -> None:
    """A loader worker's worker_init_fn (picklable: every start method)."""
    die_with(parent)
    # What Lightning installs when no worker_init_fn is given and seed_everything(workers=True) ran.
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank)
