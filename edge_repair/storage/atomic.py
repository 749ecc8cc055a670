"""Writes that a crash cannot leave half done: temp file + fsync + rename, then fsync the directory."""

import json
import os
import secrets
import shutil
from pathlib import Path


def fsync_dir(path: Path) -> None:
    # The rename itself lives in the directory; without this a power cut can undo it.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` with `data` atomically; readers see the old file or the new one, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: Path, payload) -> None:
    write_bytes(path, json.dumps(payload, indent=1, sort_keys=True).encode())


def sync_tree(root: Path) -> None:
    """Make a freshly written tree private (0600) and durable before a rename publishes it."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            os.chmod(Path(dirpath) / name, 0o600)
            fsync_file(Path(dirpath) / name)
        fsync_dir(Path(dirpath))


def publish_dir(target: Path, link: Path) -> None:
    """Point the symlink `link` at the directory `target` in one atomic rename (a directory can't be swapped)."""
    tmp = link.with_name(f".{link.name}.link-{secrets.token_hex(4)}")
    os.symlink(target.name, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)
