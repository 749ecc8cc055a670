"""The gate's negatives: what the retain buffer looks like inside the model, cached per base model.

Every token of the retain prompts and of the model's own greedy replies to them is a row the
gated units must stay silent on. Capturing them costs ~a minute on a 2-core CPU, so the rows
are computed once per (base model, retain set, layers) and kept sealed (AES-GCM) in the home:
they derive from the owner's retain buffer, which may hold private chat turns.
"""

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_repair.engine.capture import capture
from edge_repair.engine.verify import chat_tokens, greedy_replies, reply_tokens

LABEL = "negative-bank"
VERSION = "2"  # bump when the cached content changes


@dataclass
class NegativeBank:
    rows: dict[int, np.ndarray]         # layer -> (n, d) MLP inputs
    neuron_use: dict[int, np.ndarray]   # layer -> (d_ff,) how much each neuron contributes on the rows

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays = {f"rows{l}": r.astype(np.float16) for l, r in self.rows.items()}
        arrays.update({f"use{l}": u for l, u in self.neuron_use.items()})
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "NegativeBank":
        with np.load(io.BytesIO(data)) as arrays:
            rows = {int(k[4:]): arrays[k].astype(np.float32) for k in arrays.files if k.startswith("rows")}
            use = {int(k[3:]): arrays[k] for k in arrays.files if k.startswith("use")}
        return cls(rows, use)


def build(patient, prompts: list[str], layers: list[int], reply_length: int = 16) -> NegativeBank:
    """Capture every token of prompts + the model's replies at `layers` (the base model's view)."""
    from edge_repair.engine.gated import neuron_contribution
    from edge_repair.engine.lowrank import current_factors, mlp_weights, set_factors

    edits = current_factors(patient.model)
    set_factors(patient.model, {})  # negatives describe the base model, not earlier edits
    try:
        replies = greedy_replies(patient, prompts, reply_length)
        lists = [chat_tokens(patient.tokenizer, p) + reply_tokens(patient.tokenizer, r) for p, r in zip(prompts, replies)]
        acts = capture(patient.model, lists, layers)
        rows = {l: np.array(acts.mlp_in[l]) for l in layers}
        use = {l: neuron_contribution(*mlp_weights(patient.model, l), rows[l]) for l in layers}
    finally:
        set_factors(patient.model, edits)
    return NegativeBank(rows, use)


def cache_key(base_fingerprint: str, prompts: list[str], layers: list[int]) -> str:
    digest = hashlib.sha256((VERSION + base_fingerprint).encode())
    for p in prompts:
        digest.update(p.encode() + b"\0")
    digest.update(",".join(map(str, layers)).encode())
    return digest.hexdigest()[:24]


def load_or_build(patient, prompts: list[str], layers: list[int], home: Path | None = None) -> NegativeBank:
    """The cached bank for this base model and retain set, building (and sealing) it if needed."""
    from edge_repair.edits.fingerprint import fingerprint
    from edge_repair.paths import home_dir
    from edge_repair.progress import status
    from edge_repair.storage.atomic import write_bytes
    from edge_repair.storage.keys import load_key
    from edge_repair.storage.sealed import seal, unseal

    home = home or home_dir()
    key = load_key(home)
    path = home / "cache" / f"negatives-{cache_key(fingerprint(patient.path, home), prompts, layers)}.bin"
    if path.is_file():
        try:
            return NegativeBank.from_bytes(unseal(key, path.read_bytes(), LABEL, str(path)))
        except Exception:  # a damaged cache is rebuilt, never trusted
            path.unlink(missing_ok=True)
    status(f"preparing the retain activations for this model (once, {len(prompts)} prompts)")
    bank = build(patient, prompts, layers)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_bytes(path, seal(key, bank.to_bytes(), LABEL))
    return bank
