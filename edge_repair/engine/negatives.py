"""What the retain buffer looks like inside the model, cached per base model: the gate's negatives.

Every token of the retain prompts, of the model's own greedy replies to them and of shipped
everyday prose is a row the gated units must stay silent on; their Gram matrix is kept beside
them so a key solve costs O(d³) instead of O(n·d²). The base model's replies to the check prompts are kept too: an edit
is verified against them. Capturing all this costs ~a minute on a 2-core CPU, so it is computed
once per (base model, retain set, layers) and sealed (AES-GCM) in the home: it derives from the
owner's retain buffer, which may hold private chat turns.
"""

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_repair import datasets
from edge_repair.engine import spares
from edge_repair.engine.capture import capture, residuals
from edge_repair.engine.gated import Unit, WeightedRows
from edge_repair.engine.quality import token_perplexity
from edge_repair.engine.verify import chat_tokens, greedy_tokens, reply_tokens

LABEL = "negative-bank"
VERSION = "16"  # bump when the cached content changes (16: distinct rows; 15: f32 weights are scale·q + bias in f32;
# 14: attention with cpu_swiglu.exp on a CPU;
# the spare-neuron layout is part of the key: neuron use and the arithmetic follow the shapes)
GUARD_PARAGRAPHS = 8  # the last paragraphs of the general text are never negatives: an honest perplexity guard
GUARD_TOKENS = 64
CHECK_TOKENS = 8  # reply tokens compared when checking that other answers stay put


@dataclass
class NegativeBank:
    # layer -> MLP inputs (float16 values): built from every token's row, prompts concatenated; held
    # as the distinct rows (float32) with `tokens` mapping each token to its row.
    rows: dict[int, np.ndarray]
    neuron_use: dict[int, np.ndarray]   # layer -> (d_ff,) how much each neuron contributes on the rows
    lengths: list[int]                  # tokens per negative prompt (prompt + reply tokens), then raw texts
    grams: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> Σ over tokens of row rowᵀ (d, d)
    check_replies: list[list[int]] = field(default_factory=list)  # base replies to the check prompts
    guard_tokens: list[list[int]] = field(default_factory=list)   # raw text whose perplexity guards an edit
    guard_perplexity: float = 0.0                                 # the base model's perplexity on it
    follow_through: dict = field(default_factory=dict)            # layer -> (Unit, neuron), see follow_through.py
    # The residual entering the lowest bank layer, per check sequence (prompt + base reply) and per
    # guard text: edits above it leave these unchanged, so verification runs only the upper blocks.
    replay_layer: int = 0
    check_hidden: list[np.ndarray] = field(default_factory=list)
    guard_hidden: list[np.ndarray] = field(default_factory=list)
    # datasets.entities() as the model represents them (substitutes.py), one row each.
    entity_vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    # layer -> literal.DownStats, derived from `rows` at the first literal edit there (not stored).
    down_stats: dict = field(default_factory=dict)
    # The base model's KV caches of the chat template's shared turns (capture.prefix_memo; not stored).
    prefixes: dict = field(default_factory=dict)
    tokens: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> (n_tokens,) each token's row in `rows`

    def __post_init__(self):
        # Every prompt's chat-template prefix gives the same rows (~44 % of them on the default
        # model): held once, as float32 (no widening per solve), they take ~the memory of all
        # rows as float16 and each key solve scores ~half the rows.
        for layer, rows in self.rows.items():
            if layer not in self.tokens:
                self.rows[layer], self.tokens[layer] = distinct_rows(rows.astype(np.float16, copy=False))
        self.rows = {layer: rows.astype(np.float32, copy=False) for layer, rows in self.rows.items()}
        for layer, rows in self.rows.items():
            if layer not in self.grams:
                self.grams[layer] = (rows.T * self.counts(layer)) @ rows

    def counts(self, layer: int) -> np.ndarray:
        """(n_rows,) float32: how many tokens each distinct row stands for."""
        return np.bincount(self.tokens[layer], minlength=len(self.rows[layer])).astype(np.float32)

    def token_rows(self, layer: int) -> np.ndarray:
        """Every token's row, prompts concatenated (float32)."""
        return self.rows[layer][self.tokens[layer]]

    def without(self, prompts: list[int], layer: int) -> WeightedRows:
        """`layer`'s rows, counts and Gram leaving out the given prompts' tokens (e.g. prompts about
        the forget subject): their rows keep their place, with fewer or no tokens counted."""
        counts, gram = self.counts(layer), self.grams[layer]
        starts = np.r_[0, np.cumsum(self.lengths)]
        for i in sorted(set(prompts)):
            left_out = self.tokens[layer][starts[i]:starts[i + 1]]
            np.subtract.at(counts, left_out, 1.0)
            part = self.rows[layer][left_out]
            gram = gram - part.T @ part
        return WeightedRows(self.rows[layer], counts, gram)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays = {f"rows{l}": r.astype(np.float16) for l, r in self.rows.items()}  # float16 values: exact
        arrays.update({f"tokens{l}": t.astype(np.int32) for l, t in self.tokens.items()})
        arrays.update({f"use{l}": u for l, u in self.neuron_use.items()})
        arrays.update({f"gram{l}": g for l, g in self.grams.items()})
        arrays["lengths"] = np.array(self.lengths, np.int64)
        arrays["check_lengths"] = np.array([len(r) for r in self.check_replies], np.int64)
        arrays["checks"] = np.array([t for r in self.check_replies for t in r], np.int64)
        arrays["guard_lengths"] = np.array([len(t) for t in self.guard_tokens], np.int64)
        arrays["guard"] = np.array([t for r in self.guard_tokens for t in r], np.int64)
        arrays["guard_perplexity"] = np.array(self.guard_perplexity)
        for name in ("check_hidden", "guard_hidden"):
            hidden = getattr(self, name)
            arrays[f"{name}_lengths"] = np.array([len(h) for h in hidden], np.int64)
            if hidden:
                arrays[name] = np.concatenate(hidden)
        arrays["replay_layer"] = np.array(self.replay_layer)
        arrays["entity_vectors"] = self.entity_vectors
        for l, (unit, neuron) in self.follow_through.items():
            arrays[f"follow{l}"] = np.stack([unit.gate, unit.up, unit.down])
            arrays[f"follow_neuron{l}"] = np.array([neuron, unit.margin])
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "NegativeBank":
        with np.load(io.BytesIO(data)) as arrays:
            rows = {int(k[4:]): arrays[k] for k in arrays.files if k.startswith("rows")}
            use = {int(k[3:]): arrays[k] for k in arrays.files if k.startswith("use")}
            grams = {int(k[4:]): arrays[k] for k in arrays.files if k.startswith("gram")}
            tokens = {int(k[6:]): arrays[k] for k in arrays.files if k.startswith("tokens")}
            checks = [c.tolist() for c in _split(arrays["checks"], arrays["check_lengths"])]
            guard = [g.tolist() for g in _split(arrays["guard"], arrays["guard_lengths"])]
            lengths = arrays["lengths"].tolist()
            guard_perplexity = float(arrays["guard_perplexity"])
            follow = {int(k[6:]): (Unit(*arrays[k], float(arrays[f"follow_neuron{k[6:]}"][1])),
                                   int(arrays[f"follow_neuron{k[6:]}"][0]))
                      for k in arrays.files if k.startswith("follow") and not k.startswith("follow_")}
            hidden = {name: _split(arrays[name], arrays[f"{name}_lengths"]) if name in arrays.files else []
                      for name in ("check_hidden", "guard_hidden")}
            replay_layer = int(arrays["replay_layer"])
            entity_vectors = arrays["entity_vectors"]
        return cls(rows, use, lengths, grams, checks, guard, guard_perplexity, follow, replay_layer, **hidden,
                   entity_vectors=entity_vectors, tokens=tokens)


def distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct rows in order of first appearance, each row's index among them)."""
    rows = np.ascontiguousarray(rows)
    as_bytes = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, first, index = np.unique(as_bytes, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rows[first[order]], rank[index.ravel()]


def _split(rows: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    bounds = np.r_[0, np.cumsum(lengths)]
    return [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def build(patient, prompts: list[str], layers: list[int], checks: list[str] = (), reply_length: int = 16) -> NegativeBank:
    """Capture every token of prompts + the model's replies at `layers` (the base model's view)."""
    from edge_repair.engine import follow_through, substitutes
    from edge_repair.engine.gated import neuron_contribution
    from edge_repair.engine.lowrank import base_model, mlp_weights

    with base_model(patient.model):  # negatives describe the base model, not earlier edits
        replies = greedy_tokens(patient, prompts, reply_length)
        lists = [chat_tokens(patient.tokenizer, p) + r for p, r in zip(prompts, replies)]
        # Units keyed only on chat-formatted negatives misfire on raw text (stacked edits then
        # wreck perplexity), so every token of shipped everyday prose is a negative too.
        prose = [reply_tokens(patient.tokenizer, p) for p in datasets.general_text()]
        lists += prose[:-GUARD_PARAGRAPHS]
        rows = mlp_inputs(patient.model, lists, layers)
        use = {l: neuron_contribution(*mlp_weights(patient.model, l), rows[l].astype(np.float32)) for l in layers}
        check_replies = greedy_tokens(patient, list(checks), CHECK_TOKENS) if checks else []
        # Prose the gate never saw as a negative guards against units misfiring on raw text.
        guard = [p[:GUARD_TOKENS] for p in prose[-GUARD_PARAGRAPHS:]]
        guard_perplexity = token_perplexity(patient.model, guard)
        bank = NegativeBank(rows, use, [len(t) for t in lists], check_replies=check_replies, guard_tokens=guard,
                            guard_perplexity=guard_perplexity)
        bank.follow_through = follow_through.build(patient, bank, layers)
        bank.replay_layer = min(layers)
        bank.entity_vectors = substitutes.representations(patient.model, patient.tokenizer, datasets.entities(),
                                                          substitutes.layer_for(len(patient.model.layers)))
        if bank.replay_layer:
            checked = [chat_tokens(patient.tokenizer, c) + r for c, r in zip(checks, check_replies)]
            bank.check_hidden = [np.array(h) for h in residuals(patient.model, checked, bank.replay_layer)] if checked else []
            bank.guard_hidden = [np.array(h) for h in residuals(patient.model, guard, bank.replay_layer)]
    return bank


def mlp_inputs(model, lists: list[list[int]], layers: list[int], chunk: int = 32) -> dict[int, np.ndarray]:
    """float16 MLP inputs of every token, captured a chunk of prompts at a time: holding all
    kinds of all layers for hundreds of prompts at once would peak at gigabytes."""
    parts = {l: [] for l in layers}
    for start in range(0, len(lists), chunk):
        acts = capture(model, lists[start:start + chunk], layers, kinds=("mlp_in",))
        for l in layers:
            parts[l].append(np.array(acts.mlp_in[l]).astype(np.float16))
    return {l: np.concatenate(p) for l, p in parts.items()}


def cache_key(base_fingerprint: str, prompts: list[str], layers: list[int], checks: list[str] = ()) -> str:
    digest = hashlib.sha256((VERSION + base_fingerprint).encode())
    for name in datasets.entities():  # the bank holds their representations
        digest.update(b"\2" + name.encode())
    for paragraph in datasets.general_text():  # negatives and guard
        digest.update(b"\3" + paragraph.encode())
    for p in prompts:
        digest.update(p.encode() + b"\0")
    digest.update(",".join(map(str, layers)).encode())
    for p in checks:
        digest.update(b"\1" + p.encode())
    return digest.hexdigest()[:24]


def load_or_build(patient, prompts: list[str], layers: list[int], checks: list[str] = (),
                  home: Path | None = None) -> NegativeBank:
    """The cached bank for this base model and retain set, building (and sealing) it if needed."""
    from edge_repair.edits.fingerprint import fingerprint
    from edge_repair.paths import home_dir
    from edge_repair.progress import status
    from edge_repair.storage.atomic import write_bytes
    from edge_repair.storage.keys import load_key
    from edge_repair.storage.sealed import seal, unseal

    home = home or home_dir()
    key = load_key(home)
    base = fingerprint(patient.path, home) + spares.layout(patient.model)
    path = home / "cache" / f"negatives-{cache_key(base, prompts, layers, checks)}.bin"
    if path.is_file():
        try:
            return NegativeBank.from_bytes(unseal(key, path.read_bytes(), LABEL, str(path)))
        except Exception:  # a damaged cache is rebuilt, never trusted
            path.unlink(missing_ok=True)
    status(f"preparing the retain activations for this model (once, {len(prompts)} prompts)")
    bank = build(patient, prompts, layers, checks)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_bytes(path, seal(key, bank.to_bytes(), LABEL))
    return bank
