"""Private files encrypted with AES-256-GCM: any flipped or missing byte is detected, never half-read.

Layout: MAGIC | 12-byte nonce | ciphertext + 16-byte tag. The label (what the file is) is bound as
associated data, so one sealed file cannot be swapped in for another kind.
"""

import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge_repair.errors import StateError
from edge_repair.storage.atomic import write_bytes

MAGIC = b"ERSEAL1\n"
NONCE = 12
TAG = 16


def seal(key: bytes, data: bytes, label: str) -> bytes:
    nonce = os.urandom(NONCE)  # fresh per write: GCM must never reuse a nonce under one key
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, data, MAGIC + label.encode())


def unseal(key: bytes, blob: bytes, label: str, name: str = "sealed file") -> bytes:
    if len(blob) < len(MAGIC) + NONCE + TAG or not blob.startswith(MAGIC):
        raise StateError(f"{name} is truncated or not an edge-repair sealed file")
    nonce = blob[len(MAGIC):len(MAGIC) + NONCE]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + NONCE:], MAGIC + label.encode())
    except InvalidTag:
        raise StateError(f"{name} was modified, truncated or sealed with another key; it was not read") from None


def write_sealed(path: Path, key: bytes, payload, label: str) -> None:
    write_bytes(path, seal(key, json.dumps(payload).encode(), label))


def read_sealed(path: Path, key: bytes, label: str):
    try:
        blob = Path(path).read_bytes()
    except OSError as err:
        raise StateError(f"cannot read {path} ({err.strerror})") from None
    data = unseal(key, blob, label, name=str(path))
    try:
        return json.loads(data)
    except ValueError:
        raise StateError(f"{path} decrypts but holds no valid data") from None
