"""The 256-bit key that seals private files: from EDGE_REPAIR_KEY, the OS keychain, or a 0600 key file.

Order: the environment variable (CI, scripts) wins; else a key file already in the home; else the
OS keychain when keyring offers a real one (macOS Keychain, Secret Service, KWallet, Windows), never
its silent fallbacks (`fail`, `null`, plaintext `keyrings.alt`); else a new key file.

Limits of the key file: it is created 0600 and exclusively, so other users cannot read it and two
processes cannot create two keys; but it sits beside what it protects, so it does not help against
root, malware running as the owner, or a backup that copies the whole home. Prefer the keychain.
"""

import os
import secrets
import stat
from pathlib import Path

from edge_repair.errors import StateError
from edge_repair.storage.atomic import fsync_dir, write_bytes

ENV = "EDGE_REPAIR_KEY"
SERVICE = "edge-repair"
KEY_FILE = "key"
SOURCE_FILE = "keysource"  # says "keyring" once the key lives there, so we never silently switch
INSECURE = ("keyring.backends.fail", "keyring.backends.null", "keyring.backends.chainer", "keyrings.alt")


def load_key(home: Path) -> bytes:
    home = Path(home)
    if os.environ.get(ENV):
        return _from_hex(os.environ[ENV], ENV)
    if (home / KEY_FILE).exists():
        return _read_key_file(home / KEY_FILE)
    backend = secure_keyring()
    if (home / SOURCE_FILE).exists():
        if backend is None:
            raise StateError(f"the key for {home} is in the OS keychain, which is not reachable now; "
                             f"unlock it or set {ENV}")
        return _from_keyring(backend, home, create=False)
    if backend is not None:
        try:
            return _from_keyring(backend, home, create=True)
        except StateError:
            raise
        except Exception:  # noqa: BLE001 - a locked or absent keychain daemon: fall back to the file
            pass
    return _create_key_file(home / KEY_FILE)


def secure_keyring():
    """The first keyring backend that really stores secrets encrypted, or None."""
    try:
        import keyring
        from keyring.backends.chainer import ChainerBackend
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception:  # noqa: BLE001 - a broken keyring config means no keychain
        return None
    candidates = backend.backends if isinstance(backend, ChainerBackend) else [backend]
    for candidate in candidates:
        module = type(candidate).__module__
        if module.startswith("keyring.backends.") and not module.startswith(INSECURE):
            return candidate
    return None


def _from_keyring(backend, home: Path, create: bool) -> bytes:
    account = str(home.resolve())  # one key per home directory
    stored = backend.get_password(SERVICE, account)
    if stored is None:
        if not create:
            raise StateError(f"the OS keychain has no edge-repair key for {home}; sealed files there cannot be read")
        stored = secrets.token_hex(32)
        backend.set_password(SERVICE, account, stored)
    write_bytes(home / SOURCE_FILE, b"keyring\n")
    return _from_hex(stored, "the keychain entry")


def _create_key_file(path: Path) -> bytes:
    # Written under a private name, then hard-linked into place: link() fails if a key already
    # exists, so a racing process never sees a half-written key and never replaces one.
    key = os.urandom(32)
    tmp = path.with_name(f".{path.name}.new-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key.hex().encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_key_file(path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return key


def _read_key_file(path: Path) -> bytes:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StateError(f"{path} is readable by other users; run: chmod 600 {path}")
    return _from_hex(path.read_text(), str(path))


def _from_hex(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != 32:
        raise StateError(f"{where} must be 64 hex characters (a 256-bit key)")
    return key
