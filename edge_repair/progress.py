"""Status lines and progress bars on stderr, so stdout carries only answers."""

import sys


def status(message: str) -> None:
    print(f"[edge-repair] {message}", file=sys.stderr, flush=True)


def progress(label: str, done: int, total: int) -> None:
    """A progress bar redrawn in place on a terminal; on a pipe, a line every tenth of the way."""
    if sys.stderr.isatty():
        filled = 30 * done // max(total, 1)
        end = "\n" if done >= total else ""
        print(f"\r[edge-repair] {label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}", end=end,
              file=sys.stderr, flush=True)
    elif total and (done * 10 // total) != ((done - 1) * 10 // total):
        status(f"{label}: {done}/{total}")
