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
