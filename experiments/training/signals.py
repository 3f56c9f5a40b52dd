"""Stop signals during training: which one arrived, so a stopped run ends KILLED with the
conventional exit code (128 + the signal) instead of Lightning's exit status 0 for SIGTERM."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

# SIGTERM (a scheduler's stop, `kill`) and SIGINT (Ctrl-C). SLURM's pre-emption signal (SIGUSR1
# with `--signal=USR1@90`) is Lightning's: it checkpoints and requeues the job.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Records the first stop signal; the training loop itself stops on it (Lightning on SIGTERM,
    KeyboardInterrupt on SIGINT)."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process ended by it (143, 130)."""
        return 128 + int(self.received) if self.received is not None else 0

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt


@contextmanager
def stop_signals() -> Iterator[StopSignals]:
    """Record SIGTERM and SIGINT inside the block (in the main thread; elsewhere nothing is recorded)."""
    stop = StopSignals()
    try:
        before = {s: signal.signal(s, stop._record) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread: signals cannot be handled here
        yield stop
        return
    try:
        yield stop
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
