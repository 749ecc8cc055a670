"""One writer at a time: an advisory flock on a file in the home, shared for readers."""

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path

from edge_repair.errors import StateError

WAIT_SECONDS = 60.0


@contextmanager
def home_lock(home: Path, shared: bool = False, name: str = "edits", timeout: float = WAIT_SECONDS):
    """Hold `<home>/.<name>.lock`; the kernel drops it when the process dies, so a crash never wedges it."""
    fd = os.open(Path(home) / f".{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StateError(f"another edge-repair process is changing {home}; try again when it is done") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
