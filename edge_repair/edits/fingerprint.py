"""Which base model an edit belongs to: a content hash, cached on disk by path, size and mtime."""

import json
from pathlib import Path

from edge_repair.errors import ModelError
from edge_repair.loading import model_fingerprint
from edge_repair.storage.atomic import write_json

CACHE = "fingerprints.json"
CACHE_ENTRIES = 64


def _signature(path: Path) -> list:
    files = [path / "config.json"] + sorted(path.glob("*.safetensors"))
    try:
        return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    except OSError:
        raise ModelError(f"{path} is not a readable MLX model directory") from None


def fingerprint(path: Path, home: Path) -> str:
    """`model_fingerprint(path)`, hashed again only when a weight file changed size or mtime."""
    path = Path(path).resolve()
    signature = _signature(path)
    try:
        cache = json.loads((home / CACHE).read_text())
    except (OSError, ValueError):
        cache = {}
    entry = cache.get(str(path)) if isinstance(cache, dict) else None
    if isinstance(entry, dict) and entry.get("signature") == signature:
        return entry["fingerprint"]
    value = model_fingerprint(path)
    cache = dict(list(cache.items())[-(CACHE_ENTRIES - 1):]) if isinstance(cache, dict) else {}
    cache[str(path)] = {"signature": signature, "fingerprint": value}
    try:
        write_json(home / CACHE, cache)
    except OSError:
        pass  # only a cache: a read-only moment costs a re-hash next time, nothing else
    return value
