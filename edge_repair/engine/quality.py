"""Model-quality measurements shared by verification and the benchmarks."""

import math

import mlx.core as mx
import mlx.nn as nn


def perplexity(patient, text: str, window: int = 256) -> float:
    """Token-level perplexity of `text` in non-overlapping windows (held-out general text)."""
    ids = list(patient.tokenizer.encode(text, add_special_tokens=False))
    windows = [ids[i:i + window + 1] for i in range(0, len(ids) - 1, window) if len(ids[i:i + window + 1]) > 8]
    total, count = 0.0, 0
    for w in windows:
        tokens = mx.array([w])
        logits = patient.model(tokens[:, :-1]).astype(mx.float32)
        loss = nn.losses.cross_entropy(logits, tokens[:, 1:], reduction="sum")
        total += loss.item()
        count += len(w) - 1
    return math.exp(total / max(count, 1))


def token_perplexity(model, token_lists: list[list[int]]) -> float:
    """Perplexity of several token sequences in one right-padded batch (padding is not scored)."""
    from edge_repair.engine.capture import pad_batch

    tokens = pad_batch(token_lists)
    logits = model(tokens[:, :-1]).astype(mx.float32)
    losses = nn.losses.cross_entropy(logits, tokens[:, 1:], reduction="none")
    mask = mx.array([[1.0] * (len(t) - 1) + [0.0] * (tokens.shape[1] - len(t)) for t in token_lists])
    return math.exp((losses * mask).sum().item() / mask.sum().item())
