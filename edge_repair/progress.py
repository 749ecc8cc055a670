"""Status lines and progress bars on stderr, so stdout carries only answers."""

import sys


def status(message: str) -> None:
    print(f"[edge-repair] {message}", file=sys.stderr, flush=True)
