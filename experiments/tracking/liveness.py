"""Runs whose process died: every training run names its host and process, and a run left RUNNING
by a process that no longer lives (SIGKILL, an OOM kill, a power cut) is closed as KILLED by the
next training on that host, instead of staying RUNNING in the UI for ever."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from cxrlab.experiments.tracking.store import all_runs
from cxrlab.experiments.tracking.writer import RunWriter

HOST_TAG, PID_TAG = "cxrlab.host", "cxrlab.pid"
ERROR_TAG = "cxrlab.error"


def process_tags() -> dict[str, str]:
    """The tags that tell which process is writing a run."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def process_started() -> float:
    """When this process started (epoch seconds): a command's run spans the command, imports
    included, as the person who typed it waited for them (Linux /proc; elsewhere: now)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(ln for ln in Path("/proc/stat").read_text().splitlines() if ln.startswith("btime"))
        return float(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration, IndexError):
        return time.time()


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host lives."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def close_dead_runs(client: Any, experiment_id: str, keep: str | None = None) -> list[str]:
    """Close as KILLED the experiment's RUNNING runs whose process, on this host, is gone (but the
    run `keep`, which is being resumed); their ids."""
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{socket.gethostname()}'"
    closed = []
    for run in all_runs(client, [experiment_id], query):
        pid = run.data.tags.get(PID_TAG, "")
        if run.info.run_id != keep and pid.isdigit() and not process_alive(int(pid)):
            writer = RunWriter(client, run.info.run_id)
            writer.set_tags({ERROR_TAG: f"its process (pid {pid}) died without closing the run"})
            writer.finish("KILLED")
            closed.append(run.info.run_id)
    return closed
